#!/usr/bin/env bash
# The one GPU check of the trainer: one device call on a lent GPU machine (python3 with torch
# 2.11.0+cu130, no network), about 3-5 minutes. Build here first, then carry the binaries:
#   source scripts/env.sh && mkdir -p .carry && cargo build --release -p lorkd-trainer \
#     && cargo test --release -p lorkd-trainer --test eks_modes --no-run --message-format=json \
#        | python3 -c 'import json,sys;[print(m["executable"]) for m in map(json.loads,sys.stdin) if m.get("executable")]' \
#        | xargs -I{} cp {} .carry/eks_modes && cp "$CARGO_TARGET_DIR"/release/lorkd-train .carry/
#   device run: carry [".carry"], command "bash trainer/gpu-check.sh", timeout_s 420
# What it checks (docs/training.md, "GPU"):
#   1. CUDA is seen by lorkd-train;
#   2. EKS == lowrank == looped on the GPU with TF32 OFF (must pass: exits non-zero and says
#      FAILED otherwise), then with TF32 allowed (expected to miss; shows the old 5.9e-2 was TF32);
#   3. step bench @224 batch 256 T=10 r=8: f32, bf16, bf16 + channels_last (picks --amp's
#      default), EKS with the one-hot mix, and without cuDNN's autotuner (on by default);
#   4. the PyTorch reference (trainer/reference/torch_step.py), f32 and bf16 + channels_last,
#      plain MTL and the paper's EKS;
#   5. `bench --e2e` @224 with a ResNet-18 teacher: loader-only, step-only and end-to-end
#      images/s, with mean GPU utilisation sampled by nvidia-smi every 0.5 s.
# Everything lands in $OUT: summary.txt has the numbers for BENCHMARKS.md, logs.tar.gz the logs
# (the device tool brings back only a few files). GPU_CHECK_SKIP=bench skips step 3 on a rerun.
set -uo pipefail
TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
OUT="${OUT:-/tmp/gpu-out}"; mkdir -p "$OUT"
BIN=./.carry/lorkd-train
FAIL=0
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
fail() { say "FAILED: $*"; FAIL=1; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$BIN describe --arch shufflenet_v2_x1_0 --departments 10 --rank 8 2>&1 | tee "$OUT/device.txt"
grep -q "Cuda" "$OUT/device.txt" || { say "FAILED: CUDA not seen by lorkd-train"; exit 1; }

# 2. Equivalence on CUDA: TF32 off must pass; TF32 on is recorded only.
if LORKD_TEST_CUDA=1 timeout 120 ./.carry/eks_modes --test-threads 1 >"$OUT/eks_modes-tf32-off.txt" 2>&1; then
  say "eks_modes on CUDA, TF32 off: PASS"
else
  fail "eks_modes on CUDA with TF32 off (see eks_modes-tf32-off.txt):"
  grep -E "panicked|rel err|FAILED|failed" "$OUT/eks_modes-tf32-off.txt" | head -8 | tee -a "$OUT/summary.txt"
  # Diagnosis: does NVIDIA's own override change it? (then the in-process switch did not take)
  NVIDIA_TF32_OVERRIDE=0 LORKD_TEST_CUDA=1 timeout 120 ./.carry/eks_modes --test-threads 1 \
    >"$OUT/eks_modes-nvidia-override.txt" 2>&1 \
    && say "  ... but PASSES with NVIDIA_TF32_OVERRIDE=0: amp::set_tf32 did not reach cuDNN/cuBLAS"
fi
LORKD_TEST_TF32=1 LORKD_TEST_CUDA=1 timeout 120 ./.carry/eks_modes --test-threads 1 >"$OUT/eks_modes-tf32-on.txt" 2>&1 \
  && say "eks_modes on CUDA, TF32 allowed: pass" \
  || { say "eks_modes on CUDA, TF32 allowed: misses (expected; TF32 is the cause):"; grep -E "rel err" "$OUT/eks_modes-tf32-on.txt" | head -4 | tee -a "$OUT/summary.txt"; }

# 3. Step bench: numeric formats, the EKS mix, cuDNN autotuning.
if [[ "${GPU_CHECK_SKIP:-}" != *bench* ]]; then
B="--arch shufflenet_v2_x1_0 --input 224 --batch 256 --departments 10 --rank 8 --iters 8 --warmup 3 --json"
bench() { local tag=$1; shift; timeout 150 env "$@" | tee "$OUT/bench-$tag.json"; }
bench f32 $BIN bench $B --amp off
bench bf16 $BIN bench $B --amp bf16
bench bf16-cl $BIN bench $B --amp bf16-cl
bench f32-onehot LORKD_EKS_MIX=onehot $BIN bench $B --amp off
bench f32-no-autotune LORKD_CUDNN_BENCHMARK=0 $BIN bench $B --amp off
python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys, os
out = sys.argv[1]
for tag in ["f32", "bf16", "bf16-cl", "f32-onehot", "f32-no-autotune"]:
    p = os.path.join(out, f"bench-{tag}.json")
    try:
        r = json.loads(open(p).read().strip().splitlines()[-1])
    except Exception as e:
        print(f"bench {tag}: no result ({e})"); continue
    print(f"bench {tag:20s} mtl {r['mtl_ms']:.1f} ms | auto {r['auto_ms']:.1f} ({r['auto_over_mtl']:.2f}x) | "
          f"lowrank {r['lowrank_ms']:.1f} | looped {r['looped_ms']:.1f} | eks {r['eks_ms']:.1f} ({r['eks_ms']/r['mtl_ms']:.1f}x mtl) | "
          f"auto {r['auto_images_per_sec']:.0f} img/s")
EOF
fi

# 4. PyTorch reference on the same GPU.
timeout 150 python3 trainer/reference/torch_step.py --input 224 --batch 256 --departments 10 --rank 8 --eks \
  2>"$OUT/torch-ref.err" >"$OUT/torch-ref.jsonl"
# (a heredoc, not `python3 -c '...'`: the GPU machine's Python 3.11 rejects the backslashes the
# quoting needed inside f-string braces)
python3 - "$OUT/torch-ref.jsonl" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print(f"pytorch {r['variant']:26s} {r['ms']:.1f} ms {r['images_per_sec']:.0f} img/s")
EOF

# 5. End to end @224 with a teacher, GPU utilisation sampled meanwhile.
D="synthetic:departments=4,classes=5,size=224,per_class=640,seed=1"
W=$(mktemp -d)
timeout 120 $BIN teacher --data "$D" --arch resnet18 --epochs 1 --batch 256 --output "$W/teacher" --data-cache "$W/cache" --quiet \
  >"$OUT/teacher.txt" 2>&1 || fail "teacher training (teacher.txt)"
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 >"$OUT/gpu-util.txt" 2>/dev/null &
SMI=$!
for amp in off bf16-cl; do
  timeout 150 $BIN bench --e2e --data "$D" --arch shufflenet_v2_x1_0 --input 224 --batch 256 --rank 8 \
    --teacher "$W/teacher" --workers 16 --data-cache "$W/cache" --amp $amp --json \
    2>"$OUT/e2e-$amp.err" | tee "$OUT/e2e-$amp.json" || fail "bench --e2e --amp $amp (e2e-$amp.err)"
done
kill $SMI 2>/dev/null
python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys, os
out = sys.argv[1]
for amp in ["off", "bf16-cl"]:
    try:
        r = json.loads(open(os.path.join(out, f"e2e-{amp}.json")).read().strip().splitlines()[-1])
    except Exception as e:
        print(f"e2e {amp}: no result ({e})"); continue
    print(f"e2e --amp {amp}: loader decode {r['loader_decode_images_per_sec']:.0f} img/s | prepared {r['loader_prepared_images_per_sec']:.0f} img/s "
          f"(prepare {r['prepare_s']:.1f} s) | step {r['step_images_per_sec']:.0f} img/s | fit {r['e2e_images_per_sec']:.0f} img/s "
          f"({r['e2e_over_step']:.2f}x step, target >= 0.9)")
u = [float(x) for x in open(os.path.join(out, "gpu-util.txt")).read().split() if x.strip().replace('.', '', 1).isdigit()]
if u:
    busy = [x for x in u if x > 0]
    print(f"GPU utilisation during the e2e runs: mean {sum(u)/len(u):.0f} % over {len(u)} samples; "
          f"mean {sum(busy)/max(len(busy),1):.0f} % over non-idle samples (target >= 85 % in epochs)")
EOF
rm -rf "$W"
(cd "$OUT" && tar czf logs.tar.gz --exclude=logs.tar.gz --exclude=summary.txt -- * \
  && find . -maxdepth 1 -type f ! -name logs.tar.gz ! -name summary.txt -delete)
[ $FAIL = 0 ] && say "gpu-check: all checks ran" || say "gpu-check: FAILED (see above)"
exit $FAIL
