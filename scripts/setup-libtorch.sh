#!/usr/bin/env bash
# Installs PyPI's torch==2.11.0 (the libtorch that tch 0.24 binds) into a venv kept in a
# cache folder outside the clone, reused across runs. Prints the venv's python path.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
venv="$LORKD_CACHE/torch-2.11.0-venv"
lorkd_venv "$venv" 'import torch,sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 'torch==2.11.0'
echo "$venv/bin/python"
