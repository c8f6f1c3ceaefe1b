#!/usr/bin/env python3
"""Per-op-kind time of two or more `lorkd` builds on one bundle, run alternately.

    scripts/op-ab.py BUNDLE.lorkd ROUNDS ITERS MODE LORKD_BIN...

Each round runs `lorkd bench BUNDLE --profile --iters ITERS --mode MODE --json` once per
binary, in turn. The table gives, per op kind (and the end-to-end inference and switch
medians), the smallest of the rounds' medians in µs: on a shared machine the noise only
ever adds time, so the minimum over alternating rounds compares builds more steadily than
any single run (BENCHMARKS.md, "x86 requantisation … pass").
"""
import json
import subprocess
import sys


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    bundle, rounds, iters, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    bins = sys.argv[5:]
    res = {b: [] for b in bins}
    for _ in range(rounds):
        for b in bins:
            cmd = [b, "bench", bundle, "--profile", "--iters", iters, "--mode", mode, "--json"]
            d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            k = {x["kind"]: x["us"] for x in d["profile"]["kinds"]}
            k["(ops summed)"] = sum(k.values())
            k["(inference)"] = d["infer_ms_median"] * 1000
            k["(switch)"] = d["switch_ms_median"] * 1000
            res[b].append(k)
    kinds = sorted(set().union(*(r.keys() for rs in res.values() for r in rs)))
    print("| µs (min of %d rounds' medians) | " % rounds + " | ".join(bins) + " |")
    print("|---" * (len(bins) + 1) + "|")
    for k in kinds:
        cells = ["%.0f" % min(r.get(k, 0.0) for r in res[b]) for b in bins]
        print("| %s | %s |" % (k, " | ".join(cells)))


if __name__ == "__main__":
    main()
