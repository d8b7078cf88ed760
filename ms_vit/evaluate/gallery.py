"""The most confident mistakes of an evaluation: a list for the JSON report and one PNG contact sheet."""

from __future__ import annotations

import numpy as np

from ms_vit.data import folder as data
from ms_vit.evaluate.infer import softmax

THUMB = 160  # thumbnail side in pixels
CAPTION = 54  # caption height under each thumbnail


def worst_predictions(logits: np.ndarray, labels: np.ndarray, files: list[str], names: list[str], count: int) -> list:
    """The ``count`` wrong top-1 predictions with the highest predicted probability, most confident first: file,
    true and predicted index and name, the predicted probability and the true class's."""
    probs = softmax(logits)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:count]
    return [{"file": files[i], "true": int(labels[i]), "true_name": names[labels[i]], "predicted": int(predicted[i]),
             "predicted_name": names[predicted[i]], "probability": float(probs[i, predicted[i]]),
             "true_probability": float(probs[i, labels[i]])} for i in order]


def contact_sheet(mistakes: list, path: str, columns: int = 6) -> str | None:
    """Draw ``mistakes`` (``worst_predictions``) as a grid of thumbnails captioned with the true class, the predicted
    class and its probability; returns the PNG's path (None when there is no mistake to show)."""
    import cv2

    if not mistakes:
        return None
    columns = min(columns, len(mistakes))
    rows = -(-len(mistakes) // columns)
    sheet = np.full((rows * (THUMB + CAPTION), columns * THUMB, 3), 255, np.uint8)
    for k, m in enumerate(mistakes):
        rgb = data.decode_rgb(m["file"])
        scale = THUMB / max(rgb.shape[:2])
        thumb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        top, left = (k // columns) * (THUMB + CAPTION), (k % columns) * THUMB
        oy, ox = (THUMB - thumb.shape[0]) // 2, (THUMB - thumb.shape[1]) // 2
        sheet[top + oy:top + oy + thumb.shape[0], left + ox:left + ox + thumb.shape[1]] = thumb
        lines = [(f"#{k + 1} true: {m['true_name']}", (0, 110, 0)),
                 (f"pred: {m['predicted_name']}", (180, 0, 0)), (f"p = {m['probability']:.3f}", (180, 0, 0))]
        for j, (text, colour) in enumerate(lines):
            cv2.putText(sheet, text[:26], (left + 4, top + THUMB + 15 + 16 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                        colour, 1, cv2.LINE_AA)
    if not cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    return path
