"""ms_vit against PyTorch + HF transformers on this machine: ViT-B/16 inference (batch 1 and 16), one training step at
batch 16 (the engine's default, and the whole batch in one graph), the ImageFolder pipeline's images/s, peak memory
and compile time, beside this CPU's model and vector extensions and a GEMM ceiling measured in the same run (NumPy
float32 matmul, large square): each model case also reports its percentage of that ceiling, the time its FLOPs would
take at the ceiling's rate over the time measured (training FLOPs = 3 x forward). Each case runs in its own process.
The ceiling's process runs without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (an environment that pins OpenBLAS to an
older kernel would otherwise lower the ceiling below what the CPU does) and names the kernel OpenBLAS chose.

bf16: a bf16 GEMM ceiling through ms_vit's own oneDNN kernel (ms_vit.kernels), PyTorch's bf16 autocast beside its
fp32 (torchbf16_*), and ms_vit's bf16 path (msbf16_*). Where the CPU lacks avx512_bf16 / amx_bf16, the bf16 ceiling
and the ms_vit bf16 cases are null and the reason is printed; PyTorch's autocast still runs (slowly, --no-torch-bf16
leaves it out).

    python bench/bench.py [--quick] [--no-torch-bf16] [--cases ms_infer_b16 torch_infer_b16 ...]

Prints a table, then one JSON line. Ratios are PyTorch time / ms_vit time (above 1: ms_vit is faster), each pair with
the same GELU form (tanh: ms_/torch_ cases; exact erf: mserf_/torcherf_). The ms_vit
training step is the engine's own (``ms_vit.train.run.build_train_cell``: forward, backward, Adam), not a copy.
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("gemm", "ms_infer_b1", "ms_infer_b16", "ms_train_b16", "ms_trainwhole_b16", "torch_infer_b1", "torch_infer_b16",
         "torch_train_b16", "mserf_infer_b16", "torcherf_infer_b16", "pipeline", "compile_cache")
BF16_CASES = ("bf16_gemm", "msbf16_infer_b1", "msbf16_infer_b16", "msbf16_train_b16", "torchbf16_infer_b1",
              "torchbf16_infer_b16", "torchbf16_train_b16")
TORCH_BF16_CASES = tuple(name for name in BF16_CASES if name.startswith("torchbf16"))
# The fine-tuning modes (README "Choosing a mode"), run with --cases: the training step of frozen (8 of 12 blocks)
# and LoRA (rank 8 on qkv and proj), the linear probe's feature extraction and its head training (1,000 images,
# 10 epochs of batch 16 on cached features). ms_train_b16 is the full mode.
MODE_CASES = ("ms_trainfrozen8_b16", "ms_trainlora8_b16", "ms_extract_b16", "ms_head_b16")
MODES = {"train": {}, "trainwhole": {}, "trainfrozen8": {"finetune_mode": "frozen", "freeze_blocks": 8},
         "trainlora8": {"finetune_mode": "lora", "lora_rank": 8}}
# Like with like: the ms_ and torch_ cases both run the tanh-form GELU (ms_vit's default, the tutorial's; HF's
# "gelu_pytorch_tanh"); the *erf cases both run the exact erf form (timm's and HF's default).
TORCH_GELU = {"torch": "gelu_pytorch_tanh", "torcherf": "gelu", "torchbf16": "gelu_pytorch_tanh"}
# Variables that pin OpenBLAS's kernel and cache size: unset for the ceiling's process only.
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# The bf16 ceiling: the MLP's first GEMM of ViT-B/16 at batch 16 (3152 tokens x 768 @ 768 x 3072).
BF16_GEMM_SHAPE = (3152, 768, 3072)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
GEMM_SIZE = 3072


def cpu_description() -> tuple[str, list[str]]:
    """This CPU's model name and which of the vector extensions that decide GEMM speed it has."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def ceiling_env(environ=None) -> dict:
    """The environment of the GEMM ceiling's process: this one's without ``OPENBLAS_PINS``."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if k not in OPENBLAS_PINS}


def case_env(name: str) -> dict | None:
    """The environment a case's process gets: None (this one's) for all but the GEMM ceiling."""
    return ceiling_env() if name == "gemm" else None


def blas_kernel() -> str | None:
    """The BLAS and the kernel it runs as threadpoolctl reports them (e.g. "openblas Haswell"); None without
    threadpoolctl."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    names = [" ".join(str(info[k]) for k in ("internal_api", "architecture") if info.get(k))
             for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]
    return ", ".join(names) or None


def gemm_case(repeat: int, n: int | None = None) -> dict:
    """The GEMM ceiling: GFLOP/s of NumPy's float32 matmul of two n x n matrices (its BLAS, every core), the kernel
    its BLAS runs, and the OpenBLAS pins this process saw (none when run through ``child``)."""
    import numpy as np

    n = n or int(os.environ.get("MS_VIT_BENCH_GEMM_SIZE", GEMM_SIZE))  # the variable: tests use a tiny matrix
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    result = timed(lambda: a @ b, max(repeat, 1) * 2 + 1)
    return {**result, "gflops": 2 * n ** 3 / result["median_s"] / 1e9, "blas_threads": os.cpu_count(), "size": n,
            "gemm_kernel": blas_kernel(), "openblas_pins": {k: os.environ[k] for k in OPENBLAS_PINS if k in os.environ}}


def bf16_gemm_case(repeat: int, shape: tuple[int, int, int] = BF16_GEMM_SHAPE) -> dict:
    """The bf16 ceiling: GFLOP/s of ms_vit's bf16 kernel (fp32 operands rounded to bf16, fp32 accumulation and
    output, as the model calls it) on an (m x k) @ (k x n) product, called directly; skipped without bf16."""
    import ctypes

    import numpy as np

    from ms_vit.kernels import bf16_status, build, matmul_impl

    usable, reason = bf16_status()
    if not usable:
        return {"skipped": reason}
    m, k, n = shape
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32),
              np.empty((m, n), np.float32)]
    shapes = [np.array(x.shape, np.int64) for x in arrays]
    # The aot entry's own calling convention (what MindSpore passes): pointers, ranks, shapes, dtype names.
    params = (ctypes.c_void_p * 3)(*(x.ctypes.data for x in arrays))
    ndims = (ctypes.c_int * 3)(2, 2, 2)
    shape_ptrs = (ctypes.POINTER(ctypes.c_int64) * 3)(*(s.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
                                                          for s in shapes))
    dtypes = (ctypes.c_char_p * 3)(b"float32", b"float32", b"float32")
    # matmul_impl loaded MindSpore (and its libdnnl.so.3): the kernel runs on the oneDNN the model's bf16 path gets.
    impl = matmul_impl(m, k, n)
    kernel = ctypes.CDLL(build()[0]).ms_vit_bf16_matmul_nn

    def step():
        if kernel(3, params, ndims, shape_ptrs, dtypes, None, None) != 0:
            raise RuntimeError("the bf16 kernel failed (its message is above)")
    result = timed(step, max(repeat, 1) * 2 + 1)
    return {**result, "gflops": 2 * m * k * n / result["median_s"] / 1e9, "impl": impl,
            "shape": list(shape)}


def ms_bf16_reason() -> str | None:
    """None when ms_vit's bf16 path can run here, else why not (one line): the CPU or the kernel's build (the gate
    of amp_level auto), or an ms_vit without the amp_level "bf16" wiring."""
    from ms_vit.kernels import bf16_status

    usable, reason = bf16_status()
    if not usable:
        return reason
    from ms_vit.train import amp

    if getattr(amp, "BF16", None) != "bf16":
        return "ms_vit's model has no bf16 path yet (amp_level bf16 is not wired into ms_vit.train.amp)"
    return None


def case_gflop(name: str) -> float | None:
    """Floating-point work of one call of a model case in GFLOP: 2 x MACs x batch for inference (timm's 17.58 GMACs
    per ViT-B/16 image), 3 x that for a training step (forward + backward); None for other cases."""
    parts = name.split("_")
    if len(parts) != 3 or not parts[1].startswith(("infer", "train")):
        return None
    from ms_vit.models.complexity import total_macs
    from ms_vit.config import model_config

    forward = 2 * total_macs(model_config("vit_b_16")) * int(parts[2][1:]) / 1e9
    return forward * (3 if parts[1].startswith("train") else 1)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def timed(step, repeat: int) -> dict:
    """The first call (compilation included) and the median of ``repeat`` more."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"median_s": median, "first_s": first, "compile_s": max(first - median, 0.0), "peak_rss_gb": peak_rss_gb()}


def ms_case(kind: str, batch: int, repeat: int, gelu: str = "tanh", amp: str = "O0") -> dict:
    if amp == "bf16":
        reason = ms_bf16_reason()
        if reason:
            return {"skipped": reason}
    if kind == "head":
        import ms_vit

        ms_vit.set_up(None, "graph")
        return head_case(ms_vit.create_model("vit_b_16"), batch, repeat)
    step, extra = ms_step(kind, batch, gelu, amp=amp)
    result = timed(step, repeat)
    if kind == "extract":  # the linear probe's feature pass: images/s
        extra["img_s"] = batch / result["median_s"]
    return {**result, **extra}


def ms_step(kind: str, batch: int, gelu: str = "tanh", model: str = "vit_b_16", amp: str = "O0"):
    """(one call of the case, facts about it): the forward (infer), the linear probe's feature pass (extract), or one
    optimizer step of the engine's training cell (train*, on random images and labels), at AMP level ``amp`` (O0:
    fp32; bf16: the engine's bf16 GEMMs). bench/profile_ops.py profiles the same calls."""
    import mindspore as ms
    import numpy as np

    import ms_vit
    from ms_vit.config import make_train_config
    from ms_vit.models.complexity import batching
    from ms_vit.train.run import build_train_cell

    device = ms_vit.set_up(None, "graph")
    ms.set_seed(0)
    # --plain: the tutorial's kernels (Conv2d patch embedding, MindSpore's GELU), the "before" of the fast path.
    plain = {"patch_impl": "conv", "gelu_impl": "kernel"} if os.environ.get("MS_VIT_BENCH_PLAIN") == "1" else {}
    net = ms_vit.create_model(model, gelu=gelu, **plain)
    if amp != "O0":
        from ms_vit.train.amp import apply_amp

        apply_amp(net, amp)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((batch, 3, net.config.image_size, net.config.image_size)).astype(np.float32))
    if kind == "infer":
        net.set_train(False)
        return (lambda: net(x).asnumpy()), {}
    if kind == "extract":
        from ms_vit.models.vit import FeatureExtractor

        extractor = FeatureExtractor(net)
        extractor.set_train(False)
        return (lambda: extractor(x).asnumpy()), {}
    # train: the engine's default (on CPU, micro-batches with gradient accumulation); trainwhole (and --plain): the
    # whole batch in one graph; trainfrozen8, trainlora8: the engine's default in those modes.
    from ms_vit.train.modes import apply_mode, trainable_counts

    accum = 1 if kind == "trainwhole" or plain else 0
    cfg = make_train_config({"model": model, "batch_size": batch, "optimizer": "adam", "lr": 5e-5,
                             "accum_steps": accum, **MODES[kind]})
    apply_mode(net, cfg)
    plan = batching(cfg, model=net.config, device=device, amp_level=amp)
    cfg = dataclasses.replace(cfg, accum_steps=plan.accum_steps)
    # The schedule is long enough for any number of timed or profiled steps.
    cell, _ = build_train_cell(net, cfg, net.config.num_classes, steps_per_epoch=1000, amp_level=amp)
    cell.set_train(True)
    y = ms.Tensor(rng.integers(0, net.config.num_classes, batch).astype(np.int32))
    micro = plan.micro_batch
    pieces = [(x[i:i + micro], y[i:i + micro]) for i in range(0, batch, micro)]

    def step():  # one optimizer step: accum_steps calls
        for xs, ys in pieces:
            loss = cell(xs, ys)[0]
        return loss.asnumpy()

    return step, {"accum_steps": cfg.accum_steps, "trainable": trainable_counts(net)[0]}


def head_case(net, batch: int, repeat: int, images: int = 1000, epochs: int = 10) -> dict:
    """The linear probe's head training: ``epochs`` over ``images`` cached features (the engine's step on HeadNet),
    timed as a whole; ``median_s`` is the whole training's seconds."""
    import mindspore as ms
    import numpy as np

    from ms_vit.config import make_train_config
    from ms_vit.train.linear_probe import HeadNet
    from ms_vit.train.modes import apply_mode
    from ms_vit.train.run import build_train_cell

    cfg = make_train_config({"model": "vit_b_16", "batch_size": batch, "optimizer": "adam", "lr": 1e-3,
                             "accum_steps": 1, "epochs": epochs, "finetune_mode": "linear", "pretrained": "x"})
    apply_mode(net, cfg)
    steps = images // batch
    # The schedule must cover every timed run (the first and the repeats), or the LR lookup runs past its end.
    cell, _ = build_train_cell(HeadNet(net), cfg, 1000, steps_per_epoch=steps * (max(repeat, 1) + 1), amp_level="O0")
    cell.set_train(True)
    rng = np.random.default_rng(0)
    features = ms.Tensor(rng.standard_normal((images, net.config.embed_dim)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 1000, images).astype(np.int32))

    def run():
        for _ in range(epochs):
            for i in range(steps):
                loss = cell(features[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch])[0]
        return loss.asnumpy()

    result = timed(run, max(repeat, 1))
    return {**result, "steps": steps * epochs}


def torch_case(kind: str, batch: int, repeat: int, act: str = "gelu_pytorch_tanh", bf16: bool = False) -> dict:
    """HF ViT-B/16 in PyTorch: fp32, or (``bf16``) under CPU autocast to bfloat16, as PyTorch's CPU tuning guides
    advise; the weights and the optimizer stay fp32 either way."""
    import contextlib

    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000, hidden_act=act))  # B/16
    x = torch.randn(batch, 3, 224, 224)

    def precision():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    if kind == "infer":
        model.eval()

        def step():
            with torch.no_grad(), precision():
                model(pixel_values=x).logits.float().numpy()
        return timed(step, repeat)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    y = torch.randint(0, 1000, (batch,))

    def train_step():
        optimizer.zero_grad()
        with precision():
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        loss.item()
    return timed(train_step, repeat)


def pipeline_case(repeat: int) -> dict:
    """Images/s of the training pipeline (decode, random resized crop, flip, normalise) on 500x375 JPEGs at 224 px."""
    import cv2
    import numpy as np

    from ms_vit.data import folder as data
    from ms_vit.config import make_train_config

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(4):
            os.makedirs(os.path.join(tmp, f"c{c}"))
            for i in range(64):
                cv2.imwrite(os.path.join(tmp, f"c{c}", f"{i}.jpg"), rng.integers(0, 256, (375, 500, 3), np.uint8))
        cfg = make_train_config({"batch_size": 16})
        index = {f"c{c}": c for c in range(4)}
        counts = []

        def epoch():
            batches = data.train_dataset(tmp, index, cfg, epoch=len(counts))
            counts.append(sum(b[0].shape[0] for b in batches.create_tuple_iterator(output_numpy=True)))
        result = timed(epoch, repeat)
        result["img_s"] = counts[-1] / result["median_s"]
        result["workers"] = data.default_workers()
        return result


def run_case(name: str, repeat: int) -> dict:
    if name == "gemm":
        return gemm_case(repeat)
    if name == "bf16_gemm":
        return bf16_gemm_case(repeat)
    if name == "pipeline":
        return pipeline_case(repeat)
    lib, kind, batch = name.split("_")
    batch = int(batch[1:])
    if lib.startswith("ms"):
        return ms_case(kind, batch, repeat, gelu="erf" if lib == "mserf" else "tanh",
                       amp="bf16" if lib == "msbf16" else "O0")
    return torch_case(kind, batch, repeat, act=TORCH_GELU[lib], bf16=lib == "torchbf16")


def compile_cache_case() -> dict | None:
    """The training step's first call without and with MindSpore's compile cache: ms_train_b16 twice, each in a new
    process, sharing an empty cache folder (the second is a resumed run's start)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MS_COMPILER_CACHE_ENABLE": "1", "MS_COMPILER_CACHE_PATH": folder}
        cold, warm = child("ms_train_b16", 1, env), child("ms_train_b16", 1, env)
    if not cold or not warm:
        return None
    return {"median_s": warm["median_s"], "first_s": warm["first_s"], "peak_rss_gb": warm["peak_rss_gb"],
            "cold_first_s": cold["first_s"], "cold_compile_s": cold["compile_s"], "warm_compile_s": warm["compile_s"]}


def child(name: str, repeat: int, env: dict | None = None) -> dict | None:
    """Run one case in a fresh process; None when it cannot run (e.g. torch not installed) or does not apply here
    (bf16 on a CPU without it), with the reason printed."""
    if name == "compile_cache":
        return compile_cache_case()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--repeat", str(repeat)], capture_output=True,
                          text=True, cwd=ROOT, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            if "skipped" in result:
                print(f"{name}: not run ({result['skipped']})", file=sys.stderr)
                return None
            return result
    print(f"{name}: failed ({(proc.stderr.strip().splitlines() or ['no output'])[-1]})", file=sys.stderr)
    return None


def json_name(case: str) -> str:
    """A case's name in the JSON line: msbf16_infer_b16 -> ms_bf16_infer_b16 (the others unchanged)."""
    for lib in ("msbf16", "torchbf16"):
        if case.startswith(lib + "_"):
            return f"{lib[:-4]}_bf16{case[len(lib):]}"
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed repetition per case instead of three")
    parser.add_argument("--cases", nargs="+", default=list(CASES + BF16_CASES), choices=CASES + BF16_CASES + MODE_CASES)
    parser.add_argument("--no-torch-bf16", action="store_true",
                        help="leave out PyTorch's bf16 autocast cases (slow on CPUs without bf16 instructions)")
    parser.add_argument("--plain", action="store_true",
                        help="ms_vit without the CPU fast path (the tutorial's Conv2d and GELU kernels): the baseline")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.repeat)))
        return
    repeat = 1 if args.quick else 3
    if args.plain:
        os.environ["MS_VIT_BENCH_PLAIN"] = "1"
    cases = [name for name in args.cases if not (args.no_torch_bf16 and name in TORCH_BF16_CASES)]
    results = {name: child(name, repeat, case_env(name)) for name in cases}
    model, flags = cpu_description()
    gemm = results.get("gemm")
    gflops = gemm["gflops"] if gemm else None
    bf16_gemm = results.get("bf16_gemm")
    from ms_vit.kernels import bf16_status

    bf16_taken, bf16_reason = bf16_status()
    print(f"machine: {model}, {os.cpu_count()} cores, flags {' '.join(flags) or 'none of ' + ' '.join(CPU_FLAGS)}, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024 ** 3:.0f} GiB; median of {repeat}, fp32"
          + ("; ms_vit plain path (no CPU fast path)" if args.plain else ""))
    print(f"bf16: {'taken' if bf16_taken else 'not taken'} ({bf16_reason})")
    if gflops:
        print(f"GEMM ceiling: {gflops:.0f} GFLOP/s (NumPy float32 {gemm['size']}x{gemm['size']} matmul, "
              f"{gemm['median_s'] * 1e3:.0f} ms, kernel {gemm['gemm_kernel'] or 'unknown (no threadpoolctl)'}, "
              f"without {' and '.join(OPENBLAS_PINS)})")
    if bf16_gemm:
        print(f"bf16 GEMM ceiling: {bf16_gemm['gflops']:.0f} GFLOP/s ({'x'.join(map(str, bf16_gemm['shape']))}, "
              f"oneDNN {bf16_gemm['impl']}, {bf16_gemm['median_s'] * 1e3:.0f} ms)")

    def pct_of_ceiling(name):
        r, work = results.get(name), case_gflop(name)
        return round(100 * work / gflops / r["median_s"], 1) if r and work and gflops else None

    print(f"{'case':<18} {'seconds':>9} {'first call':>11} {'peak RSS GB':>12} {'% of GEMM':>10}")
    for name, r in results.items():
        if r and name not in ("gemm", "bf16_gemm"):
            extra = f"  {r['img_s']:.0f} img/s" + (f", {r['workers']} workers" if "workers" in r else "") if "img_s" in r else ""
            extra += f"  {r['accum_steps']} micro-batches" if r.get("accum_steps", 1) > 1 else ""
            extra += f"  {r['trainable']:,} trainable" if "trainable" in r else ""
            extra += f"  ({r['steps']} steps)" if "steps" in r else ""
            extra += (f"  first step {r['cold_first_s']:.1f} s cold, {r['first_s']:.1f} s from the cache"
                      if "cold_first_s" in r else "")
            pct = pct_of_ceiling(name)
            print(f"{name:<18} {r['median_s']:>9.3f} {r['first_s']:>11.2f} {r['peak_rss_gb']:>12.2f} "
                  f"{(f'{pct:.1f} %' if pct else ''):>10}{extra}")

    def ratio(case, ms="ms", torch="torch"):
        ms_r, torch_r = results.get(f"{ms}_{case}"), results.get(f"{torch}_{case}")
        return round(torch_r["median_s"] / ms_r["median_s"], 3) if ms_r and torch_r else None

    summary = {"cpu": model, "cpu_flags": flags, "gemm_gflops": round(gflops, 1) if gflops else None,
               "gemm_kernel": gemm["gemm_kernel"] if gemm else None,
               "bf16_gemm_gflops": round(bf16_gemm["gflops"], 1) if bf16_gemm else None,
               "bf16_taken": bf16_taken, "bf16_reason": bf16_reason,
               "infer_b16_ratio_vs_torch": ratio("infer_b16"), "infer_b1_ratio_vs_torch": ratio("infer_b1"),
               "train_b16_ratio_vs_torch": ratio("train_b16"),
               "infer_b16_bf16_ratio_vs_torch_bf16": ratio("infer_b16", "msbf16", "torchbf16"),
               "train_b16_bf16_ratio_vs_torch_bf16": ratio("train_b16", "msbf16", "torchbf16"),
               "infer_b16_erf_ratio_vs_torch": ratio("infer_b16", "mserf", "torcherf"),
               "infer_b16_pct_of_ceiling": pct_of_ceiling("ms_infer_b16"),
               "infer_b1_pct_of_ceiling": pct_of_ceiling("ms_infer_b1"),
               "train_b16_pct_of_ceiling": pct_of_ceiling("ms_train_b16"),
               "torch_infer_b16_pct_of_ceiling": pct_of_ceiling("torch_infer_b16"),
               "torch_train_b16_pct_of_ceiling": pct_of_ceiling("torch_train_b16"),
               "train_b16_peak_rss_gb": round(results["ms_train_b16"]["peak_rss_gb"], 2)
               if results.get("ms_train_b16") else None,
               "compile_s": round(results["ms_train_b16"]["compile_s"], 1) if results.get("ms_train_b16") else None,
               "pipeline_img_s": round(results["pipeline"]["img_s"], 1) if results.get("pipeline") else None,
               "compile_cold_s": round(results["compile_cache"]["cold_compile_s"], 1)
               if results.get("compile_cache") else None,
               "first_step_cached_s": round(results["compile_cache"]["first_s"], 1)
               if results.get("compile_cache") else None}
    # The bf16 cases' keys: torch_bf16_infer_b16_s and ms_bf16_infer_b16_s (null when not run) beside the others.
    summary.update({f"{lib}_bf16_{case}_s": None for lib in ("ms", "torch") for case in ("infer_b16", "infer_b1",
                                                                                          "train_b16")})
    summary.update({f"{json_name(k)}_s": round(v["median_s"], 3) for k, v in results.items()
                    if v and k not in ("gemm", "bf16_gemm")})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
