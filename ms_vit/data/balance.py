"""Imbalanced classes (``class_balance``): per-class weights from the training images' class counts, and the
sampler's draw of an epoch's images with replacement.

Weights: ``inverse`` gives class k the weight 1 / n_k, ``sqrt`` 1 / sqrt(n_k); either is scaled so that the mean
weight over the training images is 1 (sum over classes of n_k w_k = N), so a weighted loss keeps the scale of the
plain one and the learning rate means the same. A class without readable images gets weight 0.

``sampler``: each epoch draws as many images as the epoch has (the readable ones), with replacement, image i with
probability proportional to the weight of its class: with ``inverse`` weights every class is drawn equally often
on average. The draw depends only on (seed, epoch); data-parallel processes take disjoint slices of the one draw
(``data.folder.EpochSampler``), so a resumed epoch draws the same images.

``loss``: ``train.loss.CrossEntropySmooth`` multiplies each image's cross-entropy by its class's weight.
"""

from __future__ import annotations

import numpy as np

from ms_vit.errors import ConfigError

# The largest/smallest class ratio from which check_data and the training log suggest class_balance.
SUGGEST_RATIO = 3.0
WORDS = {"inverse": "inverse frequency", "sqrt": "square-root inverse frequency"}
# A third entry of the sampler's seed, so its draw is not the shuffle's permutation stream of the same (seed, epoch).
SAMPLER_STREAM = 0x5A3


def class_counts(labels, num_classes: int) -> np.ndarray:
    """Images per class (int64, length ``num_classes``) of the integer ``labels``."""
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]


def class_weights(counts, weighting: str = "inverse") -> np.ndarray:
    """Per-class weights (float64) of the class image counts: 1 / n_k (``inverse``) or 1 / sqrt(n_k) (``sqrt``),
    scaled so that the mean weight over the images is 1; 0 for a class without images."""
    counts = np.asarray(counts, np.float64)
    if weighting not in WORDS:
        raise ConfigError(f"class_balance_weights must be one of {', '.join(WORDS)}, got {weighting!r}")
    if counts.sum() <= 0:
        raise ConfigError("class_balance needs training images: every class is empty")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = 1.0 / (counts[present] if weighting == "inverse" else np.sqrt(counts[present]))
    return weights * (counts.sum() / (counts * weights).sum())


def imbalance_ratio(counts) -> float:
    """Largest / smallest image count over the classes that have images (1.0 for fewer than two such classes)."""
    present = np.asarray(counts, np.float64)
    present = present[present > 0]
    return float(present.max() / present.min()) if len(present) > 1 else 1.0


def weighted_draw(labels, weights, seed: int, epoch: int, exclude=()) -> np.ndarray:
    """One epoch's sample indices for the sampler, before sharding: as many as the readable images, drawn with
    replacement, index i with probability proportional to ``weights[labels[i]]`` (0 for ``exclude``).

    Depends only on (seed, epoch) and the labels: every process and every resume draws the same list.
    """
    labels = np.asarray(labels, np.int64)
    p = np.asarray(weights, np.float64)[labels]
    if len(exclude):
        p[np.fromiter(exclude, np.int64, len(exclude))] = 0.0
    total = p.sum()
    if total <= 0:
        raise ConfigError("class_balance sampler has no image to draw: every readable image has weight 0")
    n = len(labels) - len(exclude)
    return np.random.default_rng([seed, epoch, SAMPLER_STREAM]).choice(len(labels), size=n, replace=True, p=p / total)


def describe(balance: str, weighting: str, counts, weights=None) -> str:
    """The training log's line on class balance: what was taken, or a hint when the classes are imbalanced and
    nothing was taken ("" when there is nothing to say)."""
    ratio = imbalance_ratio(counts)
    if balance == "none":
        if ratio < SUGGEST_RATIO:
            return ""
        return (f"classes are imbalanced (largest/smallest class {ratio:.1f}:1): --class_balance sampler (or loss) "
                "weights them by inverse frequency")
    weights = class_weights(counts, weighting) if weights is None else weights
    used = weights[np.asarray(counts) > 0]
    return (f"class_balance {balance} ({WORDS[weighting]}): class weights {used.min():.3g}..{used.max():.3g} "
            f"(largest/smallest class {ratio:.1f}:1)")
