#!/usr/bin/env bash
# One device call on a lent GPU machine (python3 with torch 2.11.0+cu130, no network).
# Build here first, then carry the binaries:
#   source scripts/env.sh && cargo build --release -p lorkd-trainer \
#     && cargo test --release -p lorkd-trainer --test eks_modes --no-run --message-format=json \
#        | python3 -c 'import json,sys;[print(m["executable"]) for m in map(json.loads,sys.stdin) if m.get("executable")]' \
#        | xargs -I{} cp {} .carry/eks_modes && cp target/release/lorkd-train .carry/
#   device run: carry [".carry"], command "bash trainer/gpu-check.sh"
# It checks CUDA is seen, runs the EKS == lowrank == looped equivalence on the GPU, and times
# training steps of ShuffleNetV2 1.0x at 224, 10 departments, batch 256, f32 and bf16 autocast
# (images/s in JSON).
set -euo pipefail
TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
./.carry/lorkd-train describe --arch shufflenet_v2_x1_0 --departments 10 --rank 8 2>&1 | tee "$OUT/device.txt"
grep -q "Cuda" "$OUT/device.txt" || { echo "CUDA not seen by lorkd-train"; exit 1; }
LORKD_TEST_CUDA=1 ./.carry/eks_modes --test-threads 1 2>&1 | tee "$OUT/eks_modes.txt"
./.carry/lorkd-train bench --arch shufflenet_v2_x1_0 --input 224 --batch 256 --departments 10 --rank 8 --json \
  | tee "$OUT/bench-1.0x-224-T10-b256.json"
# The same with bf16 autocast (--amp bf16; UNTESTED when written: no GPU was available).
./.carry/lorkd-train bench --arch shufflenet_v2_x1_0 --input 224 --batch 256 --departments 10 --rank 8 --amp bf16 --json \
  | tee "$OUT/bench-1.0x-224-T10-b256-bf16.json"
