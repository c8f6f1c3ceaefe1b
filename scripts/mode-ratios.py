#!/usr/bin/env python3
"""Streaming and auto against Materialized, for one or more `lorkd` builds, run alternately.

    scripts/mode-ratios.py ROUNDS ITERS BUNDLE.lorkd... -- LORKD_BIN...

Each round runs `lorkd bench BUNDLE --profile --iters ITERS --mode MODE --json` for every
bundle, build and mode (materialized, streaming, auto) in turn. Per (bundle, build, mode) it
keeps the smallest of the rounds' medians (noise on a shared machine only adds time) of the
inference, of the per-op profile summed, and of the switch, and prints the ratios the
runtime's targets are stated in: streaming / materialized and auto / materialized
inference, auto switch / auto inference. A second table gives the same inference ratios as
medians over the rounds of each round's own ratio (a slow stretch of the machine then
touches both sides of a ratio), and, with several builds, each later build's per-round
inference and switch against the first's, per mode.
"""
import json
import statistics
import subprocess
import sys

MODES = ["materialized", "streaming", "auto"]


def main():
    args = sys.argv[1:]
    if "--" not in args or len(args) < 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cut = args.index("--")
    rounds, iters, bundles, bins = int(args[0]), args[1], args[2:cut], args[cut + 1 :]
    # runs[(bundle, build)]: per round, mode -> (inference, per-op sum, switch) in µs.
    runs = {(bundle, b): [] for bundle in bundles for b in bins}
    for _ in range(rounds):
        for bundle in bundles:
            for b in bins:
                row = {}
                for mode in MODES:
                    cmd = [b, "bench", bundle, "--profile", "--iters", iters, "--mode", mode, "--json"]
                    d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                    row[mode] = (
                        d["infer_ms_median"] * 1000,
                        sum(x["us"] for x in d["profile"]["kinds"]),
                        d["switch_ms_median"] * 1000,
                    )
                runs[(bundle, b)].append(row)
    name = lambda bundle: bundle.rsplit("/", 1)[-1]
    print(f"min of {rounds} rounds' medians, µs; ratios of the per-op sums (inference in brackets)")
    print("| bundle | build | materialized | streaming | auto | auto switch | mat. switch | streaming / mat | auto / mat | auto switch / auto |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (bundle, b), rs in runs.items():
        m, s, a = (tuple(min(r[mode][k] for r in rs) for k in range(3)) for mode in MODES)
        print(
            f"| {name(bundle)} | {b} | {m[1]:.0f} ({m[0]:.1f}) | {s[1]:.0f} ({s[0]:.1f}) "
            f"| {a[1]:.0f} ({a[0]:.1f}) | {a[2]:.1f} | {m[2]:.1f} | {s[1] / m[1]:.2f} ({s[0] / m[0]:.2f}) "
            f"| {a[1] / m[1]:.2f} ({a[0] / m[0]:.2f}) | {a[2] / a[1]:.2f} |"
        )
    med = lambda rs, f: statistics.median(f(r) for r in rs)
    print()
    print("medians over rounds of per-round inference ratios")
    print("| bundle | build | streaming / mat | auto / mat | auto switch / auto |")
    print("|---|---|---:|---:|---:|")
    for (bundle, b), rs in runs.items():
        print(
            f"| {name(bundle)} | {b} | {med(rs, lambda r: r['streaming'][0] / r['materialized'][0]):.3f} "
            f"| {med(rs, lambda r: r['auto'][0] / r['materialized'][0]):.3f} "
            f"| {med(rs, lambda r: r['auto'][2] / r['auto'][0]):.3f} |"
        )
    if len(bins) > 1:
        print()
        print(f"each build against {bins[0]}: medians over rounds of per-round ratios, inference / switch")
        print("| bundle | build | " + " | ".join(MODES) + " |")
        print("|---|---|" + "---:|" * len(MODES))
        for bundle in bundles:
            base = runs[(bundle, bins[0])]
            for b in bins[1:]:
                rs = runs[(bundle, b)]
                cells = []
                for mode in MODES:
                    ri = statistics.median(r[mode][0] / q[mode][0] for r, q in zip(rs, base))
                    rw = statistics.median(r[mode][2] / q[mode][2] for r, q in zip(rs, base))
                    cells.append(f"{ri:.3f} / {rw:.3f}")
                print(f"| {name(bundle)} | {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
