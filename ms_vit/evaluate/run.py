"""Evaluate a checkpoint on a folder of class folders: top-1/top-5, loss, per-class accuracy, precision, recall and
F1, macro/weighted F1, balanced accuracy, calibration error, confusion matrix; optionally with test-time augmentation
(``tta``) and a temperature (``calibrate``)."""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

import numpy as np

from ms_vit.data import folder as data

from ms_vit.evaluate import metrics, tta as tta_views
from ms_vit.errors import ConfigError
from ms_vit.data.labels import folder_indexing, resolve_labels


# --precision of eval.py and infer.py: auto takes bf16 where the CPU has bf16 instructions (ms_vit.kernels'
# gate, as amp_level auto does for training), else fp32.
PRECISIONS = ("auto", "fp32", "bf16")


class Precision(NamedTuple):
    """The precision inference runs in ("fp32" or "bf16") and why, one line."""
    name: str
    reason: str


def resolve_precision(precision: str, device_target: str | None = None, gate=None) -> Precision:
    """``--precision`` for a device (default: MindSpore's current one), by the rule training's amp_level follows
    (``ms_vit.kernels.choose_bf16``)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return Precision("fp32", "--precision fp32")
    from ms_vit.kernels import choose_bf16

    if device_target is None:
        import mindspore as ms

        device_target = ms.get_context("device_target")
    take, why = choose_bf16(precision, device_target, "--precision", "use --precision fp32 (or auto) there",
                            "or use --precision fp32", gate)
    if precision == "bf16":
        return Precision("bf16", f"--precision bf16: {why}")
    return Precision("bf16" if take else "fp32", f"--precision auto on {device_target}: {'bf16' if take else 'fp32'} "
                                                  f"({why})")


def load_for_inference(ckpt: str, model: str | None = None, precision: str | Precision = "fp32"):
    """The network a checkpoint holds, in eval mode, with ``net.class_names`` (None when the checkpoint has none)
    and ``net.preprocess`` (image_size, mean, std, interpolation, crop_pct): what its metadata says, and for a file
    from elsewhere its source's preprocessing (``checkpoint.pretrained_cfg``); ``net.preprocess_source`` says
    where that came from; ``net.temperature``: the temperature fitted by calibrate.py (its metadata's
    "temperature"), 1.0 when it has none.

    ``precision``: "fp32", "bf16" or "auto" (``resolve_precision`` for MindSpore's current device), or a
    ``Precision`` already resolved; under bf16 the network's GEMMs go onto the bf16 kernel (``use_bf16_matmuls``).
    ``net.precision`` and ``net.precision_reason`` say what was taken and why."""
    from ms_vit.checkpoint.pretrained_cfg import resolve_preprocess
    from ms_vit.evaluate.calibrate import stored_temperature
    from ms_vit.models.factory import from_pretrained

    net = from_pretrained(ckpt, model=model)
    if net.load_report.head_missing:
        from ms_vit.errors import CheckpointError

        raise CheckpointError(f"{ckpt} is a backbone without a classifier: its predictions would be random; fine-tune "
                              f"it first (run_finetune.sh --pretrained {ckpt} --data_dir DIR) and use that best.ckpt")
    net.set_train(False)
    prep, net.preprocess_source = resolve_preprocess({}, (net.pretrained_cfg, net.pretrained_cfg_source))
    net.preprocess = {"image_size": net.config.image_size, **prep}
    net.temperature = stored_temperature(net.load_report.meta, ckpt)
    taken = precision if isinstance(precision, Precision) else resolve_precision(precision)
    if taken.name == "bf16":
        from ms_vit.kernels import use_bf16_matmuls

        use_bf16_matmuls(net)
    net.precision, net.precision_reason = taken
    return net


def precision_of(net) -> dict:
    """The report keys of the precision ``net`` runs in (fp32 for a network not from ``load_for_inference``)."""
    return {"precision": getattr(net, "precision", "fp32"),
            "precision_reason": getattr(net, "precision_reason", "fp32 weights, no --precision")}


def folder_logits(net, folder: str, batch_size: int = 16, crop_pct: float | None = None, num_workers: int = 0,
                  bad_images: str = "fail", tta: str = "none") -> dict:
    """The raw logits (float64, before any temperature) of ``net`` for every readable image of ``folder``/<class>/,
    with test-time augmentation ``tta`` (``evaluate.tta``): {"logits", "labels", "rows" (each row's index into
    ``data.labelled_files``), "indexing", "seconds" (the forward passes and decoding), "preprocess"}.

    Raises a one-line ConfigError naming ``folder`` when it holds no class folders or no readable image.
    """
    tta_views.check_mode(tta)
    folders = data.class_folders(folder)
    if not folders:
        raise ConfigError(f"{folder} holds no class folders: give the folder whose sub-folders are the classes")
    indexing = folder_indexing(folders, net.config.num_classes, net.class_names, source=folder)
    prep = dict(net.preprocess, crop_pct=crop_pct or net.preprocess["crop_pct"])
    read = tta_views.input_preprocess(prep, tta)  # crops: a larger square the five crops are cut from
    data.set_bad_images(bad_images)
    batches = data.eval_dataset(folder, indexing, read["image_size"], read["crop_pct"], prep["mean"], prep["std"],
                                batch_size, num_workers, interpolation=prep.get("interpolation", "bilinear"),
                                keep_index=True, square=read.get("square"))
    logits, labels, rows = [], [], []
    start = time.perf_counter()
    try:
        for batch in batches.create_tuple_iterator(output_numpy=True):
            logits.append(tta_views.net_logits(net, batch[0], tta, prep["image_size"]))
            labels.append(batch[1])
            rows.append(batch[2])
    except RuntimeError as err:
        bad = data.decode_failure(err)
        if bad is None:
            raise
        raise ConfigError(f"image {bad} cannot be decoded: remove it (python scripts/check_data.py --quarantine) or "
                          "pass --bad_images skip") from err
    seconds = time.perf_counter() - start
    if not labels:
        raise ConfigError(f"{folder} holds no readable images: put each class's images in {folder}/<class name>/")
    return {"logits": np.concatenate(logits), "labels": np.concatenate(labels), "rows": np.concatenate(rows),
            "indexing": indexing, "seconds": seconds, "preprocess": prep}


def evaluate(net, folder: str, batch_size: int = 16, crop_pct: float | None = None, num_workers: int = 0,
             log=print, bad_images: str = "fail", gallery: int = 0, tta: str = "none",
             temperature: float | None = None) -> dict:
    """Run ``net`` over every image of ``folder``/<class>/ and return the report (see ``summarize``, ``write_report``).

    ``tta``: "none", "flip" or "crops" (``evaluate.tta``: the logits of the views are averaged); the report's
    "tta" says which. ``temperature``: the logits are divided by it before the loss, the ECE and the gallery's
    probabilities (default: ``net.temperature``, the checkpoint's fitted one, else 1); the report's "temperature"
    says which was used. Rankings, and so top-1/top-5 and the F1s, do not depend on it.

    ``gallery`` N > 0 adds ``report["mistakes"]``: the N most confident wrong predictions, most confident first
    (``write_report`` draws them into gallery.png).

    ``bad_images="skip"`` leaves out images that cannot be decoded and counts them (``report["skipped"]``);
    "fail" stops at the first one with an error naming it.
    """
    temperature = check_temperature(getattr(net, "temperature", 1.0) if temperature is None else temperature)
    found = folder_logits(net, folder, batch_size, crop_pct, num_workers, bad_images, tta)
    logits, labels, indexing = found["logits"] / temperature, found["labels"], found["indexing"]
    names = resolve_labels(net.config.num_classes, net.class_names)
    report = summarize(logits, labels, indexing, names, found["seconds"], found["preprocess"], tta, temperature)
    report["skipped"] = data.count_images(folder, indexing) - report["num_images"]
    report.update(precision_of(net))
    if gallery:
        from ms_vit.evaluate.gallery import worst_predictions

        paths = data.labelled_files(folder, indexing)[0]
        files = [paths[i] for i in found["rows"]]  # row i of the logits is this file
        report["mistakes"] = worst_predictions(logits, labels, files, names, gallery)
    if report["skipped"]:
        log(f"skipped {report['skipped']} image(s) that could not be decoded")
    return report


def check_temperature(value) -> float:
    """A temperature as a float; not a positive finite number: a one-line ConfigError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(f"--temperature must be a positive number (1: the raw logits), got {value}")
    return value


def evaluate_cifar(net, data_dir: str, batch_size: int = 16, num_workers: int = 0, tta: str = "none",
                   temperature: float | None = None) -> dict:
    """The report of ``evaluate`` for the CIFAR-10 binary test file (``test_batch.bin``) under ``data_dir``, with the
    checkpoint's preprocessing (images resized from 32 px to its image_size when they differ), ``tta`` and
    ``temperature`` as in ``evaluate`` (crops: five crops of a resize to image_size / 0.875)."""
    from ms_vit.data import cifar

    tta_views.check_mode(tta)
    temperature = check_temperature(getattr(net, "temperature", 1.0) if temperature is None else temperature)
    if net.config.num_classes != 10:
        raise ConfigError(f"the checkpoint has {net.config.num_classes} classes and CIFAR-10 has 10: give a checkpoint "
                          "trained on CIFAR-10 (run_finetune.sh --dataset cifar10)")
    root = cifar.find_root(data_dir)
    images, labels = cifar.read_split(root, "test")
    prep = dict(net.preprocess)
    # CIFAR's eval resizes the whole 32 px image (no centre crop), so crops come from a resize to the crops square.
    side = tta_views.input_preprocess({**prep, "crop_pct": 1.0}, tta).get("square", prep["image_size"])
    batches = cifar.dataset(root, "test", cifar.eval_transforms(side, prep["mean"], prep["std"]),
                            batch_size, num_workers=num_workers or data.default_workers(), arrays=(images, labels))
    start, logits = time.perf_counter(), []
    for batch in batches.create_tuple_iterator(output_numpy=True):
        logits.append(tta_views.net_logits(net, batch[0], tta, prep["image_size"]))
    names = cifar.class_names(root)
    report = summarize(np.concatenate(logits) / temperature, np.asarray(labels),
                       {name: i for i, name in enumerate(names)}, names, time.perf_counter() - start, prep, tta,
                       temperature)
    report["skipped"] = 0
    report.update(precision_of(net))
    return report


def summarize(logits: np.ndarray, labels: np.ndarray, indexing: dict, names: list, seconds: float, prep: dict,
              tta: str = "none", temperature: float = 1.0) -> dict:
    """The report of logits (already divided by ``temperature``) against labels: top-1/top-5, mean cross-entropy,
    per class top-1/top-5, precision, recall and F1; macro and weighted F1 and balanced accuracy over the classes
    with images (``metrics.class_averages``); the expected calibration error of the top-1 confidence (15 bins) with
    its reliability bins; the confusion matrix. ``tta`` and ``temperature`` are recorded as given."""
    k = min(5, logits.shape[1])
    top = metrics.top_k(logits, k)
    hit1, hit5 = metrics.in_top(top[:, :1], labels), metrics.in_top(top, labels)
    loss = float(metrics.cross_entropy_sum(logits, labels) / len(labels))
    present = sorted(indexing.items(), key=lambda item: item[1])  # (folder, index) in index order
    classes = [index for _, index in present]
    precision, recall, f1, _ = metrics.precision_recall_f1(labels, top[:, 0], classes)
    per_class = []
    for i, (folder, index) in enumerate(present):
        mask = labels == index
        per_class.append({"index": int(index), "name": names[index], "folder": folder, "images": int(mask.sum()),
                          "top_1": float(hit1[mask].mean()) if mask.any() else None,
                          "top_5": float(hit5[mask].mean()) if mask.any() else None,
                          "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i])})
    # Rows: true classes present; columns: the same classes, then "other" for predictions outside them.
    confusion = metrics.confusion_matrix(labels, top[:, 0], classes)
    calibration = metrics.reliability(logits, labels)
    return {"num_images": int(len(labels)), "top_1": float(hit1.mean()), "top_5": float(hit5.mean()),
            "top_k": k, **metrics.class_averages(labels, top[:, 0], classes), "ece": calibration["ece"],
            "ece_bins": len(calibration["bins"]), "loss": loss, "tta": tta, "temperature": float(temperature),
            "seconds": seconds, "images_per_s": len(labels) / max(seconds, 1e-9),
            "preprocess": prep, "per_class": per_class, "reliability": calibration["bins"],
            "confusion": confusion.tolist(), "confusion_labels": [names[index] for _, index in present]}


def write_report(report: dict, json_path: str) -> dict:
    """Write the JSON report and, beside it, confusion.csv, (for at most 50 classes) confusion.png, reliability.png
    (the reliability diagram of ``report["reliability"]``) and, when the report lists mistakes
    (``evaluate(gallery=N)``), gallery.png."""
    import csv

    folder = os.path.dirname(json_path) or "."
    os.makedirs(folder, exist_ok=True)
    labels = report["confusion_labels"]
    csv_path = os.path.join(folder, "confusion.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *labels, "other"])
        for name, row in zip(labels, report["confusion"]):
            writer.writerow([name, *row])
    png_path = None
    if len(labels) <= 50:
        png_path = os.path.join(folder, "confusion.png")
        plot_confusion(np.array(report["confusion"]), labels, png_path)
    report = {**report, "confusion_csv": csv_path, "confusion_png": png_path}
    if report.get("reliability"):
        report["reliability_png"] = os.path.join(folder, "reliability.png")
        plot_reliability(report["reliability"], report["ece"], report.get("temperature", 1.0),
                         report["reliability_png"])
    if report.get("mistakes") is not None:
        from ms_vit.evaluate.gallery import contact_sheet

        report["gallery_png"] = contact_sheet(report["mistakes"], os.path.join(folder, "gallery.png"))
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2)
    return report


def plot_confusion(matrix: np.ndarray, labels: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels) + 1), [*labels, "other"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    if len(labels) <= 20:
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                        color="white" if value > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(bins: list, ece: float, temperature: float, path: str) -> None:
    """The reliability diagram: per confidence bin, the accuracy (bars) against the mean confidence (the diagonal is
    perfect calibration; a bar below it is over-confidence), with the image count of each bin underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    accuracy = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    confidence = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, accuracy, width=width, align="edge", edgecolor="black", color="#4c72b0", label="accuracy")
    shown = counts > 0
    top.bar(lower[shown], (confidence - accuracy)[shown], bottom=accuracy[shown], width=width[shown], align="edge",
            color="#dd8452", alpha=0.5, edgecolor="#dd8452", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set(ylim=(0, 1), ylabel="accuracy")
    top.set_title(f"reliability: ECE {ece:.4f} ({len(bins)} bins)"
                  + (f", temperature {temperature:.3g}" if temperature != 1.0 else ""), fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(lower, counts, width=width, align="edge", edgecolor="black", color="#8c8c8c")
    bottom.set(xlim=(0, 1), xlabel="top-1 confidence", ylabel="images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# One row per eval in --results_file: what compares runs at a glance (report.json has the rest).
RESULT_COLUMNS = ("timestamp", "checkpoint", "data", "tta", "temperature", "precision", "num_images", "top_1",
                  "top_5", "macro_f1", "balanced_accuracy", "ece", "images_per_s")


def check_results_file(path: str) -> bool:
    """Whether the results CSV ``path`` is new (absent or empty); one that holds other columns than
    ``RESULT_COLUMNS`` is a one-line ConfigError (checked before an eval, so a long run does not end in it)."""
    import csv

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        if os.path.isdir(path):
            raise ConfigError(f"--results_file {path} is a folder: give a CSV file name")
        return True
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    if tuple(header) != RESULT_COLUMNS:
        raise ConfigError(f"--results_file {path} has other columns ({', '.join(header[:4])} ...): give a new "
                          "file or one an earlier eval.py --results_file wrote")
    return False


def append_results(path: str, report: dict) -> str:
    """Append one row of ``RESULT_COLUMNS`` for ``report`` (with "checkpoint" and "data_dir") to the CSV ``path``,
    writing the header first when the file is new or empty. A file whose header is not these columns is a one-line
    ConfigError (appending would mix columns)."""
    import csv
    from datetime import datetime, timezone

    path = os.fspath(path)
    fresh = check_results_file(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    row = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "checkpoint": report.get("checkpoint", ""), "data": report.get("data_dir", ""),
           "tta": report.get("tta", "none"), "temperature": f"{report.get('temperature', 1.0):.6g}",
           "precision": report.get("precision", "fp32"), "num_images": report["num_images"]}
    for key in ("top_1", "top_5", "macro_f1", "balanced_accuracy", "ece"):
        row[key] = f"{report[key]:.6f}"
    row["images_per_s"] = f"{report['images_per_s']:.2f}"
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        if fresh:
            writer.writeheader()
        writer.writerow(row)
    return path
