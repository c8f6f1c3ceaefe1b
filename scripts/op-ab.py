#!/usr/bin/env python3
"""Per-op-kind time of two or more `lorkd` builds on one bundle, run alternately.

    scripts/op-ab.py BUNDLE.lorkd ROUNDS ITERS MODE LORKD_BIN[:MODE]... [--stat median|min] [--by-shape]

Each round runs `lorkd bench BUNDLE --profile --iters ITERS --mode MODE --json` once per
binary, in turn (every other round in reverse order, so no build always runs after the same
one); a binary given as `BIN:MODE` runs in that mode instead (one build's modes side by
side). The table gives, per op kind (with `--by-shape`, per kind and shape: the same-shape
ops of a stage summed) and the end-to-end inference and switch,
the smallest over the rounds of each run's medians (default) or of each run's minima
(`--stat min`: per op the fastest of the run's iterations, summed per kind): on a shared
machine the noise only ever adds time, so the minimum over alternating rounds compares
builds more steadily than any single run (BENCHMARKS.md, "x86 requantisation … pass"), and
the minima over iterations more steadily still where the machine is shared in bursts.
"""
import json
import subprocess
import sys


def main():
    args = sys.argv[1:]
    stat = "median"
    if "--stat" in args:
        i = args.index("--stat")
        stat = args[i + 1] if i + 1 < len(args) else ""
        del args[i : i + 2]
    by_shape = "--by-shape" in args
    if by_shape:
        args.remove("--by-shape")
    if len(args) < 5 or stat not in ("median", "min"):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    bundle, rounds, iters, mode = args[0], int(args[1]), args[2], args[3]
    bins = args[4:]
    # What each run reports: the kinds' sums of per-op medians or minima, and the same
    # statistic of the inference and the switch.
    kind_key, run_key = ("us", "median") if stat == "median" else ("us_min", "min")
    res = {b: [] for b in bins}
    for r in range(rounds):
        for b in bins if r % 2 == 0 else bins[::-1]:
            exe, m = (b.split(":", 1) + [mode])[:2]
            cmd = [exe, "bench", bundle, "--profile", "--iters", iters, "--mode", m, "--json"]
            d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            k = {x["kind"]: x[kind_key] for x in d["profile"]["kinds"]}
            k["(ops summed)"] = sum(k.values())
            if by_shape:
                k = {n: v for n, v in k.items() if n.startswith("(")}
                for x in d["profile"]["ops"]:
                    n = "%s %s" % (x["kind"], x.get("shape", ""))
                    k[n] = k.get(n, 0.0) + x["us_min" if stat == "min" else "us_median"]
            k["(inference)"] = d["infer_ms_" + run_key] * 1000
            k["(switch)"] = d["switch_ms_" + run_key] * 1000
            res[b].append(k)
    kinds = sorted(set().union(*(r.keys() for rs in res.values() for r in rs)))
    label = "medians" if stat == "median" else "minima"
    print("| µs (min of %d rounds' %s) | " % (rounds, label) + " | ".join(bins) + " |")
    print("|---" * (len(bins) + 1) + "|")
    for k in kinds:
        # One decimal below 100 µs: a small model's switch moves by tenths.
        vals = [min(r.get(k, 0.0) for r in res[b]) for b in bins]
        cells = ["%.1f" % v if v < 100 else "%.0f" % v for v in vals]
        print("| %s | %s |" % (k, " | ".join(cells)))


if __name__ == "__main__":
    main()
