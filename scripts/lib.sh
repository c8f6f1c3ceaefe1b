# Sourced by the scripts (after `set -euo pipefail`): the preamble they share.
#   - the working directory becomes the repository root;
#   - LORKD_CACHE defaults to ~/.cache/lorkd (venvs and caches outside the clone);
#   - lorkd_venv DIR CHECK PKG…: a Python venv in DIR, (re)installed with pip when CHECK (Python
#     code that exits 0 when the venv is right) fails; prints nothing;
#   - lorkd_torch: the torch venv on PATH for tch's build (scripts/env.sh);
#   - lorkd_bins: builds the trainer and the tool (dev profile), sets T (lorkd-train) and L (lorkd);
#   - step TEXT: a section heading.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LORKD_CACHE="${LORKD_CACHE:-$HOME/.cache/lorkd}"

lorkd_venv() {
  local venv="$1" check="$2"
  shift 2
  if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
  fi
}

lorkd_torch() {
  # shellcheck source=env.sh
  source scripts/env.sh
}

# The dev profile builds every dependency (libtorch bindings, tract) at opt-level 3 and shares
# its cache with the tests, so the demos do not pay for a second, release build of tract.
lorkd_bins() {
  cargo build -q -p lorkd-trainer -p lorkd-tools
  T="${CARGO_TARGET_DIR:-target}/debug/lorkd-train"
  L="${CARGO_TARGET_DIR:-target}/debug/lorkd"
}

step() { printf '\n== %s\n' "$*"; }
