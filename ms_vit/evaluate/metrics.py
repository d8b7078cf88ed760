"""Classification metrics on logits: top-k hits, summed cross-entropy, the confusion matrix.

Validation during training (``callbacks.validate``) and eval.py (``evaluate.summarize``) both count with these, so
metrics.csv and the eval report give the same numbers for the same weights and images.
"""

from __future__ import annotations

import numpy as np
import scipy.special


def top_k(logits, k: int) -> np.ndarray:
    """The classes of each row's ``k`` highest logits, highest first: (N, min(k, K)) class indices.

    Tied logits come in ``np.argsort``'s order, which can depend on the dtype and the CPU's sort kernels: the
    logits are ranked in float64 whatever their type, and hits and predictions should both come from one ranking
    (so the confusion matrix's diagonal counts the top-1 hits).
    """
    return np.argsort(-np.asarray(logits, np.float64), axis=1)[:, :k]


def in_top(top: np.ndarray, labels) -> np.ndarray:
    """(N,) bool: whether each row's label is among its ``top`` classes (``top_k``'s result, or its first
    columns for a smaller k)."""
    return (top == np.asarray(labels).astype(np.int64)[:, None]).any(axis=1)


def topk_hits(logits, labels, k: int) -> np.ndarray:
    """(N,) bool: whether each integer label is among its row's ``k`` highest logits."""
    return in_top(top_k(logits, k), labels)


def log_softmax(logits) -> np.ndarray:
    """Log-probabilities of each row in float64 (SciPy's, which shifts by the row's maximum: large logits cannot
    overflow)."""
    return scipy.special.log_softmax(np.asarray(logits, np.float64), axis=1)


def cross_entropy_sum(logits, labels) -> float:
    """The plain (unsmoothed) softmax cross-entropy of each row against its integer label, summed over rows, in
    float64. Summed rather than averaged so batches of any size add up to the mean over images."""
    labels = np.asarray(labels).astype(np.int64)
    return -log_softmax(logits)[np.arange(len(labels)), labels].sum()


def confusion_matrix(labels, predicted, classes) -> np.ndarray:
    """Counts of (true, predicted) class pairs: (len(classes), len(classes) + 1) int64.

    Rows and the first columns are ``classes`` (class indices) in the given order; the last column counts
    predictions of any other class. Every label must be one of ``classes``.
    """
    column = {int(index): i for i, index in enumerate(classes)}
    confusion = np.zeros((len(column), len(column) + 1), np.int64)
    rows = np.array([column[int(t)] for t in labels], np.int64)
    cols = np.array([column.get(int(p), len(column)) for p in predicted], np.int64)
    np.add.at(confusion, (rows, cols), 1)
    return confusion


def precision_recall_f1(labels, predicted, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class of ``classes`` (class indices, in that order): precision, recall, F1 and support (images labelled
    with it), as scikit-learn's ``precision_recall_fscore_support(labels=classes, zero_division=0)``.

    A ratio with nothing to divide by (a class never predicted has no precision, one without images no recall) is 0,
    so a class the model never predicts lowers the macro average rather than leaving it undefined. Predictions of a
    class outside ``classes`` count against the recall of the true class and against no precision.
    """
    labels, predicted = np.asarray(labels).astype(np.int64), np.asarray(predicted).astype(np.int64)
    classes = np.asarray(list(classes), np.int64)
    true = labels[:, None] == classes[None, :]
    guessed = predicted[:, None] == classes[None, :]
    hits = (true & guessed).sum(axis=0).astype(np.float64)
    support, called = true.sum(axis=0), guessed.sum(axis=0)
    precision = np.divide(hits, called, out=np.zeros_like(hits), where=called > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return precision, recall, f1, support


def class_averages(labels, predicted, classes) -> dict:
    """Macro F1 (unweighted mean over classes), weighted F1 (weighted by support) and balanced accuracy (mean
    recall) over those of ``classes`` that have images: scikit-learn's ``f1_score(average="macro" / "weighted",
    labels=those, zero_division=0)`` and ``balanced_accuracy_score``. A class folder without images has no recall
    to average and is left out rather than counted as 0."""
    precision, recall, f1, support = precision_recall_f1(labels, predicted, classes)
    seen = support > 0
    if not seen.any():
        return {"macro_f1": 0.0, "weighted_f1": 0.0, "balanced_accuracy": 0.0}
    return {"macro_f1": float(f1[seen].mean()),
            "weighted_f1": float((f1 * support).sum() / support.sum()),
            "balanced_accuracy": float(recall[seen].mean())}


ECE_BINS = 15


def reliability(logits, labels, bins: int = ECE_BINS) -> dict:
    """Expected calibration error of the top-1 softmax confidence, and the bins of a reliability diagram.

    Confidences fall in ``bins`` equal-width bins (lo, hi] over [0, 1] (Guo et al., 2017; a confidence is never
    below 1/classes, so the first bin's open lower end loses nothing). ECE = sum over bins of (images in bin / all
    images) * |accuracy in bin - mean confidence in bin|. The top-1 class is ``top_k``'s, the one the report's top-1
    counts. Returns {"ece", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]} (confidence and accuracy
    None for an empty bin).
    """
    probs = np.exp(log_softmax(logits))
    predicted = top_k(logits, 1)[:, 0]
    confidence = probs[np.arange(len(probs)), predicted]
    correct = predicted == np.asarray(labels).astype(np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin b holds (edges[b], edges[b + 1]]; searchsorted(side="left") - 1 gives that, and clip puts 0 in bin 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else None
        acc = float(correct[mask].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(acc - conf)
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count, "confidence": conf,
                     "accuracy": acc})
    return {"ece": float(ece), "bins": rows}


def expected_calibration_error(logits, labels, bins: int = ECE_BINS) -> float:
    """``reliability``'s ECE alone."""
    return reliability(logits, labels, bins)["ece"]
