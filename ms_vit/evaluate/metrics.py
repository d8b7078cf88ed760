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
