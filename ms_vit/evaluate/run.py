"""Evaluate a checkpoint on a folder of class folders: top-1/top-5, loss, per-class accuracy, confusion matrix."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from ms_vit.data import folder as data

from ms_vit.evaluate import metrics
from ms_vit.errors import ConfigError
from ms_vit.data.labels import folder_indexing, resolve_labels


def load_for_inference(ckpt: str, model: str | None = None):
    """The network a checkpoint holds, in eval mode, with ``net.class_names`` (None when the checkpoint has none)
    and ``net.preprocess`` (image_size, mean, std, interpolation, crop_pct): what its metadata says, and for a file
    from elsewhere its source's preprocessing (``checkpoint.pretrained_cfg``); ``net.preprocess_source`` says
    where that came from."""
    from ms_vit.checkpoint.pretrained_cfg import resolve_preprocess
    from ms_vit.models.factory import from_pretrained

    net = from_pretrained(ckpt, model=model)
    if net.load_report.head_missing:
        from ms_vit.errors import CheckpointError

        raise CheckpointError(f"{ckpt} is a backbone without a classifier: its predictions would be random; fine-tune "
                              f"it first (run_finetune.sh --pretrained {ckpt} --data_dir DIR) and use that best.ckpt")
    net.set_train(False)
    prep, net.preprocess_source = resolve_preprocess({}, (net.pretrained_cfg, net.pretrained_cfg_source))
    net.preprocess = {"image_size": net.config.image_size, **prep}
    return net


def evaluate(net, folder: str, batch_size: int = 16, crop_pct: float | None = None, num_workers: int = 0,
             log=print, bad_images: str = "fail", gallery: int = 0) -> dict:
    """Run ``net`` over every image of ``folder``/<class>/ and return the report (see ``write_report``).

    ``gallery`` N > 0 adds ``report["mistakes"]``: the N most confident wrong predictions, most confident first
    (``write_report`` draws them into gallery.png).

    ``bad_images="skip"`` leaves out images that cannot be decoded and counts them (``report["skipped"]``);
    "fail" stops at the first one with an error naming it.
    """
    import mindspore as ms

    folders = data.class_folders(folder)
    if not folders:
        raise ConfigError(f"{folder} holds no class folders: give the folder whose sub-folders are the classes")
    indexing = folder_indexing(folders, net.config.num_classes, net.class_names, source=folder)
    prep = dict(net.preprocess, crop_pct=crop_pct or net.preprocess["crop_pct"])
    data.set_bad_images(bad_images)
    batches = data.eval_dataset(folder, indexing, prep["image_size"], prep["crop_pct"], prep["mean"], prep["std"],
                                batch_size, num_workers, interpolation=prep.get("interpolation", "bilinear"),
                                keep_index=True)
    logits, labels, rows = [], [], []
    start = time.perf_counter()
    try:
        for batch in batches.create_tuple_iterator(output_numpy=True):
            logits.append(net(ms.Tensor(batch[0])).asnumpy().astype(np.float64))
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
        raise ConfigError(f"{folder} holds no readable images")
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    names = resolve_labels(net.config.num_classes, net.class_names)
    report = summarize(logits, labels, indexing, names, seconds, prep)
    report["skipped"] = data.count_images(folder, indexing) - report["num_images"]
    if gallery:
        from ms_vit.evaluate.gallery import worst_predictions

        paths = data.labelled_files(folder, indexing)[0]
        files = [paths[i] for i in np.concatenate(rows)]  # row i of the logits is this file
        report["mistakes"] = worst_predictions(logits, labels, files, names, gallery)
    if report["skipped"]:
        log(f"skipped {report['skipped']} image(s) that could not be decoded")
    return report


def evaluate_cifar(net, data_dir: str, batch_size: int = 16, num_workers: int = 0) -> dict:
    """The report of ``evaluate`` for the CIFAR-10 binary test file (``test_batch.bin``) under ``data_dir``, with the
    checkpoint's preprocessing (images resized from 32 px to its image_size when they differ)."""
    import mindspore as ms

    from ms_vit.data import cifar

    if net.config.num_classes != 10:
        raise ConfigError(f"the checkpoint has {net.config.num_classes} classes and CIFAR-10 has 10: give a checkpoint "
                          "trained on CIFAR-10 (run_finetune.sh --dataset cifar10)")
    root = cifar.find_root(data_dir)
    images, labels = cifar.read_split(root, "test")
    prep = dict(net.preprocess)
    batches = cifar.dataset(root, "test", cifar.eval_transforms(prep["image_size"], prep["mean"], prep["std"]),
                            batch_size, num_workers=num_workers or data.default_workers(), arrays=(images, labels))
    start, logits = time.perf_counter(), []
    for batch in batches.create_tuple_iterator(output_numpy=True):
        logits.append(net(ms.Tensor(batch[0])).asnumpy().astype(np.float64))
    names = cifar.class_names(root)
    report = summarize(np.concatenate(logits), np.asarray(labels), {name: i for i, name in enumerate(names)}, names,
                       time.perf_counter() - start, prep)
    report["skipped"] = 0
    return report


def summarize(logits: np.ndarray, labels: np.ndarray, indexing: dict, names: list, seconds: float, prep: dict) -> dict:
    """Top-1/top-5, mean cross-entropy, per-class accuracy and the confusion matrix of logits against labels."""
    k = min(5, logits.shape[1])
    top = metrics.top_k(logits, k)
    hit1, hit5 = metrics.in_top(top[:, :1], labels), metrics.in_top(top, labels)
    loss = float(metrics.cross_entropy_sum(logits, labels) / len(labels))
    present = sorted(indexing.items(), key=lambda item: item[1])  # (folder, index) in index order
    per_class = []
    for folder, index in present:
        mask = labels == index
        per_class.append({"index": int(index), "name": names[index], "folder": folder, "images": int(mask.sum()),
                          "top_1": float(hit1[mask].mean()) if mask.any() else None,
                          "top_5": float(hit5[mask].mean()) if mask.any() else None})
    # Rows: true classes present; columns: the same classes, then "other" for predictions outside them.
    confusion = metrics.confusion_matrix(labels, top[:, 0], [index for _, index in present])
    return {"num_images": int(len(labels)), "top_1": float(hit1.mean()), "top_5": float(hit5.mean()),
            "top_k": k, "loss": loss, "seconds": seconds, "images_per_s": len(labels) / max(seconds, 1e-9),
            "preprocess": prep, "per_class": per_class, "confusion": confusion.tolist(),
            "confusion_labels": [names[index] for _, index in present]}


def write_report(report: dict, json_path: str) -> dict:
    """Write the JSON report and, beside it, confusion.csv, (for at most 50 classes) confusion.png and, when the
    report lists mistakes (``evaluate(gallery=N)``), gallery.png."""
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
