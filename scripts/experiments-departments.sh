#!/usr/bin/env bash
# Does LoRKD beat MTL when more departments share the backbone? MTL and LoRKD (no teacher,
# ranks from RANKS) on synthetic data with 3 and with 8 departments, over SEEDS, written to
# docs/results-departments.md (mean ± std and paired differences).
# Knobs (env): SEEDS (default "1 2 3 4 5"), DEPTS (default "3 8"), RANKS (default "4 8"),
#   EPOCHS (8), OUT (runs/departments), RESULTS, LORKD_TRAIN (a prebuilt lorkd-train).
# About 15 min of one core for the defaults (8 departments: ~35 s a fit).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
lorkd_torch

SEEDS="${SEEDS:-1 2 3 4 5}"
DEPTS="${DEPTS:-3 8}"
RANKS="${RANKS:-4 8}"
EPOCHS="${EPOCHS:-8}"
OUT="${OUT:-runs/departments}"
RESULTS="${RESULTS:-docs/results-departments.md}"
if [ -n "${LORKD_TRAIN:-}" ]; then
  T="$LORKD_TRAIN"
else
  cargo build -q -p lorkd-trainer
  T="${CARGO_TARGET_DIR:-target}/debug/lorkd-train"
fi
mkdir -p "$OUT"
start=$(date +%s)
for D in $DEPTS; do
  for seed in $SEEDS; do
    # The same spec as scripts/experiments.sh except the department count.
    data="synthetic:departments=$D,classes=3,size=32,per_class=60,seed=$seed"
    for m in mtl $(printf 'lorkd-r%s ' $RANKS); do
      name="d$D-$m-$seed"
      [ -f "$OUT/$name.json" ] && continue
      case $m in
        mtl) args=(--method mtl) ;;
        *) args=(--method lorkd --rank "${m#lorkd-r}") ;;
      esac
      rm -rf "$OUT/runs/$name"
      echo "   $name"
      "$T" fit --data "$data" --arch shufflenet_v2_x0_5 --epochs "$EPOCHS" --lr 0.01 --seed "$seed" \
        --lora-alpha 8 --threads 1 --batch 32 --quiet "${args[@]}" -o "$OUT/runs/$name" 2> "$OUT/$name.log" \
        || { echo "fit $name failed (log: $OUT/$name.log)"; tail -3 "$OUT/$name.log"; exit 1; }
      "$T" eval "$OUT/runs/$name" --data "$data" --split test --json > "$OUT/$name.json"
    done
  done
done
secs=$(( $(date +%s) - start ))
python3 - "$OUT" "$RESULTS" "$secs" "$SEEDS" "$DEPTS" "$RANKS" "$EPOCHS" <<'PY'
import json, statistics as st, sys, datetime, platform
out, results, secs, seeds, depts, ranks, epochs = sys.argv[1:]
seeds, depts, ranks = [int(s) for s in seeds.split()], depts.split(), ranks.split()
def top1(d, m, s):
    return json.load(open(f"{out}/d{d}-{m}-{s}.json"))["mean_experts"]
def ms(v):
    return f"{st.mean(v):.3f} ± {st.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
L = [f"# LoRKD vs MTL as departments grow (synthetic, ShuffleNetV2 0.5x @32, no teacher)", "",
     f"Made by `SEEDS=\"{' '.join(map(str, seeds))}\" DEPTS=\"{' '.join(depts)}\" RANKS=\"{' '.join(ranks)}\" EPOCHS={epochs} scripts/experiments-departments.sh` on {datetime.date.today()} ({cpu}, this invocation {secs} s; runs already done are reused).",
     "Test-split mean top-1 over departments; mean ± sample std over seeds; each seed draws its own data and initialisation. Regenerate with the command above; do not edit by hand.", "",
     "| departments | MTL | " + " | ".join(f"LoRKD r = {r}" for r in ranks) + " | " + " | ".join(f"LoRKD r = {r} − MTL (paired)" for r in ranks) + " |",
     "|---|---|" + "---|" * (2 * len(ranks))]
for d in depts:
    mtl = [top1(d, "mtl", s) for s in seeds]
    cells = [ms(mtl)]
    diffs = []
    for r in ranks:
        lo = [top1(d, f"lorkd-r{r}", s) for s in seeds]
        cells.append(ms(lo))
        dd = [a - b for a, b in zip(lo, mtl)]
        diffs.append(f"{st.mean(dd):+.3f} ± {st.stdev(dd):.3f} ({sum(x > 0 for x in dd)} of {len(dd)} seeds higher)")
    L.append(f"| {d} | " + " | ".join(cells + diffs) + " |")
open(results, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
