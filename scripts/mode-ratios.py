#!/usr/bin/env python3
"""Streaming and auto against Materialized, for one or more `lorkd` builds, run alternately.

    scripts/mode-ratios.py ROUNDS ITERS BUNDLE.lorkd... -- LORKD_BIN...

Each round runs `lorkd bench BUNDLE --profile --iters ITERS --mode MODE --json` for every
bundle, build and mode (materialized, streaming, auto) in turn. Per (bundle, build, mode) it
keeps the smallest of the rounds' medians (noise on a shared machine only adds time) of the
inference, of the per-op profile summed, and of the switch, and prints the ratios the
runtime's targets are stated in: streaming / materialized and auto / materialized
inference, auto switch / auto inference.
"""
import json
import subprocess
import sys

MODES = ["materialized", "streaming", "auto"]


def main():
    args = sys.argv[1:]
    if "--" not in args or len(args) < 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cut = args.index("--")
    rounds, iters, bundles, bins = int(args[0]), args[1], args[2:cut], args[cut + 1 :]
    best = {}
    for _ in range(rounds):
        for bundle in bundles:
            for b in bins:
                for mode in MODES:
                    cmd = [b, "bench", bundle, "--profile", "--iters", iters, "--mode", mode, "--json"]
                    d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    v = (
                        d["infer_ms_median"] * 1000,
                        sum(x["us"] for x in d["profile"]["kinds"]),
                        d["switch_ms_median"] * 1000,
                    )
                    k = (bundle, b, mode)
                    best[k] = tuple(min(p, q) for p, q in zip(best.get(k, v), v))
    print(f"min of {rounds} rounds' medians, µs; ratios of the per-op sums (inference in brackets)")
    print("| bundle | build | materialized | streaming | auto | auto switch | streaming / mat | auto / mat | auto switch / auto |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for bundle in bundles:
        for b in bins:
            m, s, a = (best[(bundle, b, mode)] for mode in MODES)
            print(
                f"| {bundle.rsplit('/', 1)[-1]} | {b} | {m[1]:.0f} ({m[0]:.0f}) | {s[1]:.0f} ({s[0]:.0f}) "
                f"| {a[1]:.0f} ({a[0]:.0f}) | {a[2]:.1f} | {s[1] / m[1]:.2f} ({s[0] / m[0]:.2f}) "
                f"| {a[1] / m[1]:.2f} ({a[0] / m[0]:.2f}) | {a[2] / a[1]:.2f} |"
            )


if __name__ == "__main__":
    main()
