"""Imbalanced folders: macro-F1 and top-1 of the linear probe with class_balance none, sampler and loss, on a
deliberately imbalanced copy of a real data set.

Data: scikit-learn's digits as bench/real_transfer.py writes them (dataset/real_transfer/digits: 1,437 train / 360
val, 10 classes, 64 px PNGs; written here first if missing). For each --ratios R, dataset/real_transfer/digits_imbR
holds a copy of its train/ with classes 0-4 whole and of classes 5-9 only round(n / R) images each (evenly spaced
in file order: deterministic), and val/ unchanged (36 images a class: balanced, so macro-F1 and top-1 weigh every
class alike).

Runs: ms_vit's fine_tune in finetune_mode linear with the DINOv2 ViT-S/14 weights of build/dinov2_s14 (see
bench/real_transfer.py) at 112 px and 30 head epochs, the same recipe as real_transfer.py's linear runs (adamw 2e-3,
one warmup epoch, batch 32, no label smoothing, no weight decay), once per class_balance setting: none, then
sampler and loss with each --weightings. The backbone's features are extracted by the first run on a data set and
copied into the later runs' output folders, whose feature cache (same weights, preprocessing and files) then reads
them. Every row is scored on the val features with the head of the last epoch (not the best one: the val split must
not choose the epoch it is scored on): top-1, macro-F1 (scikit-learn), the mean recall of the minority classes 5-9
and of the majority 0-4. Two scikit-learn LogisticRegression rows on the same features (class_weight None and
"balanced") are references.

    python bench/imbalance.py                          # ratios 10 and 50, inverse and sqrt: about 10 min on 2 cores
    python bench/imbalance.py --ratios 10 --weightings inverse --seeds 0 1 2

Prints a Markdown table and one JSON line (--json PATH writes it too).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(ROOT, "dataset", "real_transfer")
WEIGHTS = os.path.join(ROOT, "build", "dinov2_s14")
MINORITY = ("5", "6", "7", "8", "9")
MARKER = ".complete"




def _real_transfer():
    """bench/real_transfer.py (beside this script, so on sys.path): its data writer and linear recipe."""
    import real_transfer

    return real_transfer


def imbalanced_copy(source: str, ratio: int) -> str:
    """source's train/ with the minority classes cut to 1 / ``ratio`` and its val/ whole, in
    DATA_ROOT/digits_imb<ratio> (written once, into a staging folder renamed into place when whole)."""
    from ms_vit.data.folder import class_folders, list_images

    root = os.path.join(DATA_ROOT, f"digits_imb{ratio}")
    if os.path.isfile(os.path.join(root, MARKER)):
        return root
    staging = f"{root}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for split in ("train", "val"):
        for name in class_folders(os.path.join(source, split)):
            files = list_images(os.path.join(source, split, name))
            if split == "train" and name in MINORITY:
                keep = max(1, int(round(len(files) / ratio)))
                files = [files[i] for i in np.linspace(0, len(files) - 1, keep).round().astype(int)]
            os.makedirs(os.path.join(staging, split, name))
            for f in files:
                shutil.copyfile(os.path.join(source, split, name, f), os.path.join(staging, split, name, f))
    open(os.path.join(staging, MARKER), "w").close()
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
    return root


def scores(labels: np.ndarray, predictions: np.ndarray) -> dict:
    from sklearn.metrics import f1_score, recall_score

    recall = recall_score(labels, predictions, average=None, labels=list(range(10)), zero_division=0)
    return {"top1": round(float((labels == predictions).mean()), 4),
            "macro_f1": round(float(f1_score(labels, predictions, average="macro")), 4),
            "minority_recall": round(float(recall[5:].mean()), 4), "majority_recall": round(float(recall[:5].mean()), 4)}


def head_predictions(net, features: np.ndarray) -> np.ndarray:
    """The trained head's class for each feature row (the ViT's dropout and dense, in eval mode)."""
    import mindspore as ms

    from ms_vit.train.linear_probe import HeadNet

    head = HeadNet(net)
    head.set_train(False)
    return head(ms.Tensor(features)).asnumpy().argmax(1)


def run_one(data_dir: str, out: str, balance: str, weighting: str, seed: int, epochs: int, image_size: int,
            cache_from: str | None, recipe) -> tuple[dict, str]:
    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    if cache_from:  # the features the first run on this data extracted: this run's cache reads them
        os.makedirs(os.path.join(out, "features"), exist_ok=True)
        shutil.copy(cache_from, os.path.join(out, "features"))
    values = {**recipe.COMMON, **recipe.MODES["linear"], "seed": seed, "data_dir": data_dir, "pretrained": WEIGHTS,
              "image_size": image_size, "epochs": epochs, "output_dir": out, "class_balance": balance,
              "class_balance_weights": weighting, "log_every": 1000}
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith(("class_balance", "classes are imbalanced", "features:", "training ")):
            print(f"    {line}", flush=True)

    start = time.perf_counter()
    result = fine_tune(make_train_config(values), log=log)
    seconds = time.perf_counter() - start
    cache = glob.glob(os.path.join(out, "features", "*.npz"))[0]
    with np.load(cache) as cached:
        val_features, val_labels = cached["val_features"], cached["val_labels"]
        train_labels = cached["train_labels"]
    predictions = head_predictions(result.net, val_features)
    row = {"balance": balance, "weighting": weighting if balance != "none" else "", "seed": seed,
           **scores(val_labels, predictions), "val_top1_last_logged": round(float(result.last["top_1"]), 4),
           "fit_s": round(seconds, 1), "train_images": int(len(train_labels))}
    return row, cache


def logreg_rows(cache: str) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    with np.load(cache) as cached:
        arrays = {k: cached[k].astype(np.float64) if "features" in k else cached[k] for k in cached.files}
    rows = []
    for class_weight in (None, "balanced"):
        clf = LogisticRegression(max_iter=5000, class_weight=class_weight)
        clf.fit(arrays["train_features"], arrays["train_labels"])
        rows.append({"balance": f"logreg class_weight={class_weight}", "weighting": "", "seed": "",
                     **scores(arrays["val_labels"], clf.predict(arrays["val_features"]))})
    return rows


def table(results: list[dict]) -> str:
    out = ["| train set (train images, minority per class) | class_balance | weights | seeds | val top-1 | "
           "val macro-F1 | minority recall (5-9) | majority recall (0-4) |", "|---|---|---|---|---|---|---|---|"]
    for group in results:
        name = f"digits {group['ratio']}:1 ({group['train_images']}, {group['minority_per_class']})"
        rows = {}
        for r in group["rows"]:
            rows.setdefault((r["balance"], r["weighting"]), []).append(r)
        for (balance, weighting), same in rows.items():
            mean = {k: np.mean([r[k] for r in same]) for k in ("top1", "macro_f1", "minority_recall",
                                                               "majority_recall")}
            spread = ""
            if len(same) > 1:
                spread = f" ± {np.std([r['macro_f1'] for r in same]):.4f}"
            seeds = ",".join(str(r["seed"]) for r in same) if same[0]["seed"] != "" else "(lbfgs)"
            out.append(f"| {name} | {balance} | {weighting} | {seeds} | {mean['top1']:.4f} | "
                       f"{mean['macro_f1']:.4f}{spread} | {mean['minority_recall']:.4f} | "
                       f"{mean['majority_recall']:.4f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=int, nargs="+", default=[10, 50], help="majority:minority image ratios")
    parser.add_argument("--weightings", nargs="+", default=["inverse", "sqrt"], choices=["inverse", "sqrt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(WEIGHTS, "model.safetensors")):
        print(f"{WEIGHTS} is missing: python tests/dinov2_onnx.py writes it (see bench/real_transfer.py)",
              file=sys.stderr)
        return 1
    recipe = _real_transfer()
    import ms_vit

    ms_vit.set_up("CPU", mode="graph")
    digits = recipe.write_digits(os.path.join(DATA_ROOT, "digits"))
    settings = [("none", "inverse")] + [(b, w) for w in args.weightings for b in ("sampler", "loss")]
    workdir = tempfile.mkdtemp(prefix="ms_vit_imbalance_")
    results, started = [], time.perf_counter()
    try:
        for ratio in args.ratios:
            data_dir = imbalanced_copy(digits, ratio)
            per_class = len(os.listdir(os.path.join(data_dir, "train", MINORITY[0])))
            print(f"digits {ratio}:1 ({data_dir}): {per_class} images in each of the classes 5-9", flush=True)
            cache, rows = None, []
            for seed in args.seeds:
                for balance, weighting in settings:
                    out = os.path.join(workdir, f"r{ratio}-{balance}-{weighting}-s{seed}")
                    row, made = run_one(data_dir, out, balance, weighting, seed, args.epochs, args.image_size, cache,
                                        recipe)
                    if cache is None:  # kept under its own name: the cache key the later runs look for
                        cache = os.path.join(workdir, f"features-r{ratio}", os.path.basename(made))
                        os.makedirs(os.path.dirname(cache))
                        shutil.copyfile(made, cache)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"  {balance:<7} {row['weighting']:<7} seed {seed}: top-1 {row['top1']:.4f} macro-F1 "
                          f"{row['macro_f1']:.4f} minority recall {row['minority_recall']:.4f} ({row['fit_s']:.0f} s)",
                          flush=True)
                    rows.append(row)
            rows += logreg_rows(cache)
            results.append({"ratio": ratio, "train_images": rows[0]["train_images"], "minority_per_class": per_class,
                            "rows": rows})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {"bench": "imbalance", "data": "sklearn digits (64 px PNGs)", "weights": "DINOv2 ViT-S/14",
               "finetune_mode": "linear", "image_size": args.image_size, "epochs": args.epochs,
               "wall_s": round(time.perf_counter() - started, 1), "results": results}
    print(table(results))
    recipe.write_summary(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
