#!/usr/bin/env bash
# Installs PyPI's torch==2.11.0 (the libtorch that tch 0.24 binds) into a venv kept in a
# cache folder outside the clone, reused across runs. Prints the venv's python path.
set -euo pipefail
cache="${LORKD_CACHE:-$HOME/.cache/lorkd}"
venv="$cache/torch-2.11.0-venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import torch,sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  echo "$venv/bin/python"; exit 0
fi
mkdir -p "$cache"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'torch==2.11.0' >&2
echo "$venv/bin/python"
