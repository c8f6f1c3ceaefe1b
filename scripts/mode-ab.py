#!/usr/bin/env python3
"""Materialized, streaming and auto for one bundle and one or more `lorkd` builds, alternating.

    scripts/mode-ab.py ROUNDS ITERS BUNDLE.lorkd -- LORKD_BIN...

Each round runs `lorkd bench BUNDLE --iters ITERS --mode MODE --json` for every build and
mode in turn (no `--profile`, so the inference median is the plain loop's). Per build it
prints the smallest of the rounds' medians (µs) of each mode's inference and of the auto
and materialized switches, then the medians over rounds of the per-round ratios the
runtime's targets are stated in (streaming / materialized, auto / materialized, auto switch
/ auto inference); with several builds, each later build's per-round ratio to the first,
per mode. On a shared machine noise only adds time: the minima and the per-round ratios
compare builds more steadily than single runs (BENCHMARKS.md, session 40).
"""
import json
import statistics as st
import subprocess
import sys

MODES = ["materialized", "streaming", "auto"]


def main():
    a = sys.argv[1:]
    if "--" not in a or len(a) < 5:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cut = a.index("--")
    rounds, iters, bundle, bins = int(a[0]), a[1], a[2], a[cut + 1 :]
    res = {b: [] for b in bins}
    for _ in range(rounds):
        for b in bins:
            row = {}
            for m in MODES:
                cmd = [b, "bench", bundle, "--iters", iters, "--mode", m, "--json"]
                d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                row[m] = (d["infer_ms_median"] * 1e3, d["switch_ms_median"] * 1e3)
            res[b].append(row)
    print(bundle)
    for b in bins:
        rs = res[b]
        lo = lambda m, k: min(r[m][k] for r in rs)
        med = lambda f: st.median(f(r) for r in rs)
        print(
            "%s: min µs mat %.1f streaming %.1f auto %.1f | auto switch %.1f mat switch %.1f"
            " | median ratios streaming/mat %.3f auto/mat %.3f auto switch/auto %.3f"
            % (
                b, lo("materialized", 0), lo("streaming", 0), lo("auto", 0),
                lo("auto", 1), lo("materialized", 1),
                med(lambda r: r["streaming"][0] / r["materialized"][0]),
                med(lambda r: r["auto"][0] / r["materialized"][0]),
                med(lambda r: r["auto"][1] / r["auto"][0]),
            )
        )
    for b in bins[1:]:
        for m in MODES:
            ri = st.median(res[b][i][m][0] / res[bins[0]][i][m][0] for i in range(rounds))
            rw = st.median(res[b][i][m][1] / res[bins[0]][i][m][1] for i in range(rounds))
            print("  %s / %s, %s: inference %.3f switch %.3f" % (b, bins[0], m, ri, rw))


if __name__ == "__main__":
    main()
