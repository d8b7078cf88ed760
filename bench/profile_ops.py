"""Where the time goes, per op: MindSpore's CPU profiler on the ViT-B/16 forward and the engine's training step.

    python bench/profile_ops.py [--cases infer_b16 train_b16] [--steps 2] [--model vit_b_16] [--amp O0|bf16]

Builds the same calls bench/bench.py times (``bench.ms_step``), runs one untimed call (compilation), then profiles
``--steps`` calls with ``mindspore.Profiler`` and groups the host kernels' times (``cpu_op_detail_info_0.csv``) into
rows: the GEMMs, attention's batched matmuls, softmax, LayerNorm, GELU, bias additions, layout changes, the optimizer
update and everything else. "outside kernels" is the wall time per call minus the kernels' sum: the executor's own
work and the profiler's. Prints one markdown table per case (for bench/NOTES.md), then one JSON line.
"""

import argparse
import csv
import glob
import json
import os
import sys
import tempfile
import time

from bench import cpu_description, ms_step  # bench/ is on the path: scripts run as python bench/<name>.py

LAYOUT = {"Transpose", "Reshape", "Unstack", "Stack", "Concat", "StridedSlice", "StridedSliceGrad", "Tile", "Split",
          "ExpandDims", "Squeeze", "Flatten", "Cast", "Identity", "TensorCopySlices", "Gather", "Slice", "SliceGrad"}
OPTIMIZER = ("Adam", "ApplyAdam", "AdamWeightDecay", "AdamApplyOne", "SGD", "ApplyMomentum", "Assign", "AssignAdd")
ROWS = ("GEMM (MatMul)", "attention batched matmul", "softmax", "LayerNorm", "GELU", "bias add",
        "transpose / reshape / slice", "optimizer update", "everything else")


def category(op_type: str, full_name: str) -> str:
    """The row of the table an op's time goes to, from its type and the scope of the cell that made it."""
    scope = full_name.lower()  # ms_vit's own backward of a cell (GELU, LayerNorm, softmax) runs in its scope
    if "gelu" in scope or op_type.startswith("GeLU"):
        return "GELU"
    if "softmax" in scope or op_type.startswith("Softmax"):
        return "softmax"
    if "layernorm" in scope or op_type.startswith("LayerNorm"):
        return "LayerNorm"
    if op_type == "MatMul" or op_type.startswith("Custom"):  # Custom: the bf16 kernel (GELU's is caught above)
        return "GEMM (MatMul)"
    if op_type.startswith("BatchMatMul"):
        return "attention batched matmul"
    if op_type.startswith("BiasAdd"):
        return "bias add"
    if op_type in LAYOUT:
        return "transpose / reshape / slice"
    if op_type.startswith(OPTIMIZER) or "optimizer" in scope:
        return "optimizer update"
    return "everything else"


def profile(step, steps: int, out: str) -> tuple[dict, dict, float]:
    """({row: ms per call}, {op type: ms per call}, wall ms per call while profiling)."""
    import mindspore as ms

    step()  # compile outside the profile
    profiler = ms.Profiler(output_path=out)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) * 1e3 / steps
    profiler.analyse()
    detail = glob.glob(os.path.join(out, "**", "cpu_op_detail_info_0.csv"), recursive=True)
    if not detail:
        raise SystemExit(f"error: MindSpore's profiler wrote no cpu_op_detail_info_0.csv under {out}")
    rows, types = dict.fromkeys(ROWS, 0.0), {}
    with open(detail[0]) as f:
        for rec in csv.DictReader(f):
            ms_total = float(rec["op_total_time(ms)"]) / steps
            row = category(rec["op_type"], rec["full_op_name"])
            rows[row] += ms_total
            types[f"{row}: {rec['op_type']}"] = types.get(f"{row}: {rec['op_type']}", 0.0) + ms_total
    return rows, types, wall


def table(name: str, rows: dict, wall: float, plain_ms: float) -> str:
    kernels = sum(rows.values())
    lines = [f"{name}: {plain_ms:.0f} ms per call unprofiled, {wall:.0f} ms profiled, kernels {kernels:.0f} ms",
             "", "| op | ms per call | % of wall |", "|---|---|---|"]
    for row, value in sorted(rows.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {row} | {value:.0f} | {100 * value / wall:.1f} |")
    lines.append(f"| outside kernels (executor, profiler) | {max(wall - kernels, 0):.0f} | "
                 f"{100 * max(wall - kernels, 0) / wall:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["infer_b16", "train_b16"],
                        help="KIND_bBATCH with KIND infer, train, trainwhole, trainfrozen8, trainlora8 or extract")
    parser.add_argument("--steps", type=int, default=2, help="profiled calls per case")
    parser.add_argument("--model", default="vit_b_16")
    parser.add_argument("--amp", default="O0", choices=("O0", "bf16"), help="fp32, or the engine's bf16 GEMMs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one case per process, as bench.py: a profiler and a graph per process
        kind, batch = args.child.split("_")
        step, extra = ms_step(kind, int(batch[1:]), model=args.model, amp=args.amp)
        step()
        start = time.perf_counter()
        step()
        plain_ms = (time.perf_counter() - start) * 1e3
        with tempfile.TemporaryDirectory() as out:
            rows, types, wall = profile(step, args.steps, out)
        print(json.dumps({"case": args.child, "plain_ms": plain_ms, "wall_ms": wall, "rows": rows, "op_types": types,
                          **extra}))
        return
    import subprocess

    model, flags = cpu_description()
    print(f"machine: {model}, {os.cpu_count()} cores, flags {' '.join(flags)}; {args.model}, amp {args.amp}; "
          "MindSpore CPU profiler, "
          f"{args.steps} profiled calls per case\n")
    results = []
    for case in args.cases:
        proc = subprocess.run([sys.executable, __file__, "--child", case, "--steps", str(args.steps), "--model",
                               args.model, "--amp", args.amp], capture_output=True, text=True)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            print(f"{case}: failed ({(proc.stderr.strip().splitlines() or ['no output'])[-1]})", file=sys.stderr)
            continue
        r = json.loads(line)
        results.append(r)
        print(table(f"{args.model} {case}" + (f" ({r['accum_steps']} micro-batches)" if r.get("accum_steps", 1) > 1
                                               else ""), r["rows"], r["wall_ms"], r["plain_ms"]))
        top = sorted(r["op_types"].items(), key=lambda kv: -kv[1])[:12]
        print("\nop types, ms per call: " + ", ".join(f"{name} {value:.0f}" for name, value in top) + "\n")
    print(json.dumps({"cpu": model, "cpu_flags": flags, "model": args.model,
                      "cases": {r["case"]: {k: round(v, 1) for k, v in r["rows"].items()} for r in results}}))


if __name__ == "__main__":
    main()
