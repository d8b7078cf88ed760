"""Predict labels for image files and draw them on the images (OpenCV), optionally with attention rollout."""

from __future__ import annotations

import csv
import glob
import json
import os

import numpy as np

from ms_vit.data import folder as data
from ms_vit.errors import ConfigError


def find_images(source: str) -> list[str]:
    """An image file, every image below a folder (recursively), or the files a glob pattern matches."""
    if os.path.isdir(source):
        found = [os.path.join(root, f) for root, dirs, files in os.walk(source) for f in files
                 if f.lower().endswith(data.IMAGE_EXTENSIONS) and not f.startswith(".")]
    elif os.path.isfile(source):
        found = [source]
    elif glob.has_magic(source):
        found = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p)]
    else:
        raise ConfigError(f"input {source} does not exist: give an image, a folder or a glob pattern in quotes")
    if not found:
        raise ConfigError(f"no images in {source} (looked for {', '.join(data.IMAGE_EXTENSIONS)})")
    return sorted(found)


def read_rgb(path: str) -> np.ndarray:
    """Any image as 8-bit RGB (H, W, 3), EXIF orientation applied, transparency over white (``data.decode_rgb``,
    the decoder training and eval use too). Raises ValueError naming the file when it cannot be read."""
    return data.decode_rgb(path)


def preprocess(rgb: np.ndarray, prep: dict) -> np.ndarray:
    """The eval transform of training and eval.py (``data.eval_transforms``), applied to one decoded image
    (``prep["square"]``, when there: the larger square of crops test-time augmentation)."""
    image = rgb
    for op in data.eval_transforms(prep["image_size"], prep["crop_pct"], prep["mean"], prep["std"], decode=False,
                                   interpolation=prep.get("interpolation", "bilinear"), square=prep.get("square")):
        image = op(image)
    return np.asarray(image, np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def attention_rollout(maps: np.ndarray, prefix: int = 1) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): maps (layers, B, heads, T, T) -> (B, T - prefix) class-token
    relevance of the patch tokens (``prefix``: the class token and any registers, which are not image positions).

    Heads are averaged, the residual connection is added as identity, rows renormalised, and the layers multiplied.
    """
    layers, batch, _, tokens, _ = maps.shape
    rollout = np.broadcast_to(np.eye(tokens), (batch, tokens, tokens)).copy()
    for layer in maps:
        a = layer.mean(axis=1) + np.eye(tokens)
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a @ rollout
    relevance = rollout[:, 0, prefix:]
    return relevance / np.maximum(relevance.max(axis=1, keepdims=True), 1e-12)


def annotate(rgb: np.ndarray, lines: list[str], heat: np.ndarray | None = None) -> np.ndarray:
    """The image (BGR, same size) with ``lines`` written top-left on a dark band; the first line is the prediction.

    The font scales with the image, so the text stays legible from thumbnails to photos; an image under 160 px gets
    the prediction line only, so the text does not cover it (predictions.json has the whole list).
    """
    import cv2

    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = image.shape[:2]
    if min(h, w) < 160:
        lines = lines[:1]
    if heat is not None:
        grid = int(round(np.sqrt(heat.size)))
        heat_map = cv2.resize(heat.reshape(grid, grid).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        coloured = cv2.applyColorMap(np.clip(heat_map * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        image = cv2.addWeighted(image, 0.55, coloured, 0.45, 0)
    scale = max(0.3, min(w, h) / 600.0)
    thickness = max(1, int(round(scale * 2)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(line, font, scale * (1.0 if i == 0 else 0.8), thickness)[0] for i, line in enumerate(lines)]
    pad = max(2, int(6 * scale))
    y = pad
    band_h = sum(s[1] + pad * 2 for s in sizes)
    band_w = min(w, max(s[0] for s in sizes) + pad * 2)
    overlay = image.copy()
    cv2.rectangle(overlay, (0, 0), (band_w, min(h, band_h)), (0, 0, 0), -1)
    image = cv2.addWeighted(overlay, 0.6, image, 0.4, 0)
    for i, (line, size) in enumerate(zip(lines, sizes)):
        y += size[1] + pad
        colour = (0, 255, 0) if i == 0 else (255, 255, 255)
        cv2.putText(image, line, (pad, y), font, scale * (1.0 if i == 0 else 0.8), colour, thickness, cv2.LINE_AA)
        y += pad
    return image


def output_name(path: str, root: str | None, used: set) -> str:
    """A file name for the annotated copy: the path relative to the input root, flattened, kept unique."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    stem, ext = os.path.splitext(rel.replace(os.sep, "__"))
    ext = ext if ext.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".png"
    name, n = stem + ext, 1
    while name in used:
        name, n = f"{stem}_{n}{ext}", n + 1
    used.add(name)
    return name


def predict_files(net, paths: list[str], labels: list[str], output_dir: str, topk: int = 5, batch_size: int = 8,
                  attention: bool = False, input_root: str | None = None, log=print, tta: str = "none",
                  temperature: float | None = None) -> dict:
    """Predict, annotate and record every readable image of ``paths``; unreadable ones are reported and skipped.

    ``tta``: "none", "flip" or "crops" (``evaluate.tta``: the logits of the views are averaged; the attention map,
    when asked for, is the plain view's). The probabilities are softmax(logits / ``temperature``); default
    ``net.temperature``, the checkpoint's fitted one (``calibrate``), else 1.

    Writes ``output_dir``/<annotated images>, predictions.json (with the "tta", "temperature" and "precision"
    used, and why that precision) and predictions.csv; returns {"records": [...], "skipped": [(path, reason)],
    "json": path, "csv": path}.
    """
    import cv2
    import mindspore as ms

    from ms_vit.evaluate import tta as tta_views
    from ms_vit.evaluate.run import check_temperature, precision_of
    from ms_vit.models.vit import AttentionOutput

    tta_views.check_mode(tta)
    temperature = check_temperature(getattr(net, "temperature", 1.0) if temperature is None else temperature)
    read = tta_views.input_preprocess(net.preprocess, tta)  # crops: the larger square the crops are cut from
    size = net.preprocess["image_size"]
    os.makedirs(output_dir, exist_ok=True)
    runner = AttentionOutput(net) if attention else net
    k = min(topk, net.config.num_classes)
    records, skipped, used = [], [], set()
    for start in range(0, len(paths), batch_size):
        images, kept = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(read_rgb(path))
                kept.append(path)
            except ValueError as err:
                skipped.append((path, str(err)))
                log(f"skipped {err}")
        if not kept:
            continue
        batch = np.stack([preprocess(img, read) for img in images])
        heats, maps = [None] * len(kept), []

        def forward(view):
            if attention and not maps:  # the first view is the plain one: its attention is the one drawn
                logits, attention_maps = runner(ms.Tensor(view))
                maps.append(attention_maps.asnumpy().astype(np.float64))
                return logits
            return net(ms.Tensor(view))

        logits = tta_views.average_logits(forward, batch, tta, size)
        if attention:
            heats = attention_rollout(maps[0], net.config.num_prefix_tokens)
        probs = softmax(logits / temperature)
        for path, rgb, p, heat in zip(kept, images, probs, heats):
            order = np.argsort(-p)[:k]
            top = [{"index": int(i), "label": labels[i], "probability": float(p[i])} for i in order]
            lines = [f"{top[0]['label']}: {top[0]['probability']:.2f}"] + \
                    [f"{t['index']} {t['label']}: {t['probability']:.2f}" for t in top[1:]]
            name = output_name(path, input_root, used)
            out_path = os.path.join(output_dir, name)
            if not cv2.imwrite(out_path, annotate(rgb, lines, heat)):
                raise ConfigError(f"cannot write {out_path}: check that {output_dir} is writable")
            records.append({"file": path, "annotated": out_path, "top": top})
            log(f"{path}: {{{top[0]['index']}: {top[0]['label']!r}}} {top[0]['probability']:.3f}")
    json_path, csv_path = os.path.join(output_dir, "predictions.json"), os.path.join(output_dir, "predictions.csv")
    with open(json_path, "w") as handle:
        json.dump({"topk": k, "tta": tta, "temperature": temperature, **precision_of(net), "predictions": records,
                   "skipped": [{"file": f, "reason": r} for f, r in skipped]}, handle, indent=2)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "annotated"] + [f"{c}_{i + 1}" for i in range(k) for c in ("index", "label", "prob")])
        for r in records:
            writer.writerow([r["file"], r["annotated"]] +
                            [v for t in r["top"] for v in (t["index"], t["label"], f"{t['probability']:.6f}")])
    return {"records": records, "skipped": skipped, "json": json_path, "csv": csv_path}
