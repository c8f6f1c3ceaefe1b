#!/usr/bin/env python3
"""lorkd against ONNX Runtime (and tract) on the same expert, in the same run.

For each bundle tag (`x0_5-64`, `x1_0-224`: `TAG-f32.lorkd`, `TAG-int8.lorkd` and
`TAG-calib.npy` in --dir, written by `write_bench_bundles`), this

1. times `lorkd bench` on the int8 and f32 bundles in Materialized and Streaming mode
   (`--vs-tract` on the int8 Materialized run: tract on the fused f32 expert);
2. exports the f32 bundle's department with `lorkd export-onnx` (the fused float expert);
3. times ONNX Runtime on it in f32, and in int8: static QDQ quantisation
   (`quantize_static`, per-channel int8 weights, int8 activations, MinMax calibration on
   the images the int8 bundle was calibrated on);
4. prints a table of medians and the lorkd / ORT ratios (`--json`: one JSON object).

Every timing is a median of single-image latencies, batch 1, one thread; with `--rounds R`
steps 1 and 3 run R times in turn and each timing keeps its smallest median. The input is
the one `lorkd bench` uses (its splitmix64 `Rng(0x5eed)`, uniform in [-1, 1)).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# One thread everywhere (numpy's BLAS is not on the timed path, but keep it quiet).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

MASK = (1 << 64) - 1


def lorkd_input(n):
    """`Rng::new(0x5eed).vec(n, 1.0)` of `lorkd_runtime::engine::testnet`."""
    state, out = 0x5EED, np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        u = np.float32(z >> 40) / np.float32(1 << 24)
        out[i] = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(1.0)
    return out


def lorkd_bench(lorkd, bundle, mode, iters, tract=False):
    cmd = [lorkd, "bench", bundle, "--mode", mode, "--iters", str(iters), "--json"]
    if tract:
        cmd.append("--vs-tract")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def time_session(sess, x, iters):
    feed = {sess.get_inputs()[0].name: x}
    out = sess.run(None, feed)[0]
    times = []
    for _ in range(iters):
        s = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times), out


class Images(CalibrationDataReader):
    def __init__(self, name, images):
        self.it = iter([{name: img[None].astype(np.float32)} for img in images])

    def get_next(self):
        return next(self.it, None)


def quantize(f32_path, int8_path, input_name, calib):
    pre = f32_path + ".pre.onnx"
    quant_pre_process(f32_path, pre, skip_symbolic_shape=True)
    quantize_static(
        pre,
        int8_path,
        Images(input_name, calib),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def one(args, tag, iters, tmp):
    d = args.dir
    f32b, i8b = f"{d}/{tag}-f32.lorkd", f"{d}/{tag}-int8.lorkd"
    calib = np.load(f"{d}/{tag}-calib.npy")
    row = {"tag": tag, "iters": iters, "rounds": args.rounds}
    dept = lorkd_bench(args.lorkd, i8b, "materialized", 1)["department"]
    onnx_f32 = os.path.join(tmp, f"{tag}-f32.onnx")
    onnx_i8 = os.path.join(tmp, f"{tag}-int8.onnx")
    subprocess.run(
        [args.lorkd, "export-onnx", f32b, "--dept", dept, "-o", onnx_f32],
        check=True,
        capture_output=True,
    )
    s32 = session(onnx_f32)
    name = s32.get_inputs()[0].name
    quantize(onnx_f32, onnx_i8, name, calib)
    s8 = session(onnx_i8)
    x = lorkd_input(int(np.prod(calib.shape[1:]))).reshape((1,) + calib.shape[1:])
    # Every measurement once a round, in turn; each keeps the smallest of its rounds'
    # medians (on a shared machine noise only adds time, and it drifts between runs).
    best = {}

    def keep(key, ms):
        best[key] = min(best.get(key, ms), ms)

    for _ in range(args.rounds):
        r = lorkd_bench(args.lorkd, i8b, "materialized", iters, tract=True)
        row["department"], row["cpu"], row["kernels"] = r["department"], r["cpu"], r["kernels"]
        keep("tract_f32_ms", r["tract_ms_median"])
        keep("lorkd_int8_materialized_ms", r["infer_ms_median"])
        keep("lorkd_int8_switch_ms", r["switch_ms_median"])
        keep("lorkd_int8_streaming_ms", lorkd_bench(args.lorkd, i8b, "streaming", iters)["infer_ms_median"])
        r = lorkd_bench(args.lorkd, f32b, "materialized", iters)
        keep("lorkd_f32_materialized_ms", r["infer_ms_median"])
        keep("lorkd_f32_switch_ms", r["switch_ms_median"])
        keep("lorkd_f32_streaming_ms", lorkd_bench(args.lorkd, f32b, "streaming", iters)["infer_ms_median"])
        t32, y32 = time_session(s32, x, iters)
        t8, y8 = time_session(s8, x, iters)
        keep("ort_f32_ms", t32)
        keep("ort_int8_ms", t8)
    row.update(best)
    # A sanity check that the int8 model is the same network (not a timing).
    row["ort_int8_max_abs_logit_diff"] = float(np.abs(y32 - y8).max())
    o = row["ort_f32_ms"]
    row["ratio_int8_materialized_vs_ort_f32"] = row["lorkd_int8_materialized_ms"] / o
    row["ratio_int8_materialized_vs_ort_int8"] = (
        row["lorkd_int8_materialized_ms"] / row["ort_int8_ms"]
    )
    row["ratio_f32_materialized_vs_ort_f32"] = row["lorkd_f32_materialized_ms"] / o
    row["ratio_int8_streaming_vs_materialized"] = (
        row["lorkd_int8_streaming_ms"] / row["lorkd_int8_materialized_ms"]
    )
    row["ratio_tract_vs_ort_f32"] = row["tract_f32_ms"] / o
    return row


def table(rows):
    lines = [
        "| model | ORT f32 ms | ORT int8 ms | tract f32 ms | lorkd int8 mat ms | lorkd int8 stream ms"
        " | lorkd f32 mat ms | lorkd f32 stream ms | int8 mat / ORT f32 | int8 mat / ORT int8"
        " | f32 mat / ORT f32 | int8 stream / int8 mat |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tag']} | {r['ort_f32_ms']:.3f} | {r['ort_int8_ms']:.3f} | {r['tract_f32_ms']:.3f}"
            f" | {r['lorkd_int8_materialized_ms']:.3f} | {r['lorkd_int8_streaming_ms']:.3f}"
            f" | {r['lorkd_f32_materialized_ms']:.3f} | {r['lorkd_f32_streaming_ms']:.3f}"
            f" | {r['ratio_int8_materialized_vs_ort_f32']:.2f}"
            f" | {r['ratio_int8_materialized_vs_ort_int8']:.2f}"
            f" | {r['ratio_f32_materialized_vs_ort_f32']:.2f}"
            f" | {r['ratio_int8_streaming_vs_materialized']:.2f} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lorkd", required=True, help="the lorkd binary")
    ap.add_argument("--dir", required=True, help="bundles from write_bench_bundles")
    ap.add_argument("--tags", default="x0_5-64,x1_0-224")
    ap.add_argument("--iters", default="40,15", help="timed iterations per tag")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure everything this many times in turn; each keeps its smallest median",
    )
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tags = a.tags.split(",")
    iters = [int(i) for i in a.iters.split(",")]
    iters += [iters[-1]] * (len(tags) - len(iters))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = [one(a, t, n, tmp) for t, n in zip(tags, iters)]
        except subprocess.CalledProcessError as e:
            err = (e.stderr or b"")
            err = err.decode() if isinstance(err, bytes) else err
            sys.exit(f"bench_ort: {' '.join(e.cmd)} failed: {err.strip().splitlines()[-1:]}")
    meta = {"onnxruntime": ort.__version__, "numpy": np.__version__, "threads": 1}
    if a.json:
        print(json.dumps({"meta": meta, "rows": rows}))
    else:
        print(
            f"cpu: {rows[0]['cpu']}; lorkd kernels {rows[0]['kernels']}; onnxruntime"
            f" {ort.__version__}; one thread; medians (min over {a.rounds} round(s))"
        )
        print(table(rows))


if __name__ == "__main__":
    main()
