#!/usr/bin/env bash
# lorkd against ONNX Runtime and tract on the same expert, one thread, in one run
# (BENCHMARKS.md, "lorkd vs ONNX Runtime"). Usage: scripts/bench-ort.sh [--json] [bench_ort.py args]
#   1. a small venv in ${LORKD_CACHE:-~/.cache/lorkd}/ort-1.32-venv (PyPI onnxruntime 1.32, onnx, numpy);
#   2. `lorkd` built with the bench-rel profile (CARGO_TARGET_DIR honoured), or $LORKD_BIN;
#   3. the random bench bundles + calibration images in ${LORKD_BENCH_DIR:-/tmp/kern-bench}
#      (written once by the ignored `write_bench_bundles` test);
#   4. scripts/bench_ort.py: lorkd bench (int8/f32, materialized/streaming, --vs-tract),
#      export-onnx, ORT f32 and static-QDQ int8, the table with the ratios.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
venv="$LORKD_CACHE/ort-1.32-venv"
lorkd_venv "$venv" 'import onnxruntime,onnx,numpy,sys; sys.exit(not onnxruntime.__version__.startswith("1.32."))' \
  'onnxruntime==1.32.*' onnx numpy
# LORKD_BIN: an already built `lorkd` (skips the bench-rel build).
lorkd="${LORKD_BIN:-}"
if [ -z "$lorkd" ]; then
  cargo build -q -p lorkd-tools --profile bench-rel >&2
  lorkd="${CARGO_TARGET_DIR:-target}/bench-rel/lorkd"
fi
dir="${LORKD_BENCH_DIR:-/tmp/kern-bench}"
mkdir -p "$dir"
if ! [ -f "$dir/x1_0-224-calib.npy" ] || ! [ -f "$dir/x0_5-64-int8.lorkd" ]; then
  LORKD_BENCH_DIR="$dir" cargo test -q -p lorkd-tools --lib -- --ignored write_bench_bundles >&2
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec "$venv/bin/python" scripts/bench_ort.py --lorkd "$lorkd" --dir "$dir" "$@"
