# Sourced by the scripts: puts the cached torch venv on PATH for tch's build (LIBTORCH_USE_PYTORCH).
# Installs it on first use (scripts/setup-libtorch.sh).
_lorkd_py="$("$(dirname "${BASH_SOURCE[0]}")/setup-libtorch.sh")"
export PATH="$(dirname "$_lorkd_py"):$PATH"
export LIBTORCH_USE_PYTORCH=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
