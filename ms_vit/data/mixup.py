"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on training batches, with soft targets.

Each batch is mixed with itself reversed, as timm does. Label smoothing is applied once, to the one-hot targets
before mixing (ms_vit's definition: ``1 - s`` on the true class, ``s / (K - 1)`` elsewhere), and the mixed targets go
to ``CrossEntropySmooth`` as soft labels. All randomness of a batch comes from (seed, epoch, batch index), so a
resumed epoch mixes its remaining batches exactly as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def mixing(aug) -> bool:
    """Whether the augment keys (``config.AugmentKeys``, timm's names) turn mixup or cutmix on."""
    return aug.mixup_alpha > 0 or aug.cutmix_alpha > 0


def smooth_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """(B,) integer labels -> (B, K) targets: ``1 - s`` on the true class, ``s / (K - 1)`` elsewhere."""
    targets = np.full((len(labels), num_classes), smoothing / (num_classes - 1), np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing
    return targets


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of about (1 - lam) of the image at a uniform random centre, clipped to the image: (y0, y1, x0, x1)."""
    cut = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


def mix_batch(images: np.ndarray, labels: np.ndarray, aug, num_classes: int, smoothing: float,
              rng: np.random.Generator, mix: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Mix (B, C, H, W) images and (B,) labels with the batch reversed, as the augment keys ``aug`` say
    (``config.AugmentKeys``: mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob). Returns images, (B, K)
    targets smoothed by ``smoothing`` and the weight of the original images (1.0 when the batch was left alone)."""
    targets = smooth_one_hot(labels, num_classes, smoothing)
    if not mix or not mixing(aug) or rng.random() >= aug.mixup_prob:
        return images, targets, 1.0
    use_cutmix = aug.cutmix_alpha > 0 and (aug.mixup_alpha <= 0 or rng.random() < aug.mixup_switch_prob)
    images = images.copy()
    if use_cutmix:
        lam = float(rng.beta(aug.cutmix_alpha, aug.cutmix_alpha))
        y0, y1, x0, x1 = cutmix_box(images.shape[2], images.shape[3], lam, rng)
        images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (images.shape[2] * images.shape[3])  # the area actually pasted
    else:
        lam = float(rng.beta(aug.mixup_alpha, aug.mixup_alpha))
        images = (lam * images + (1.0 - lam) * images[::-1]).astype(images.dtype)
    return images, (lam * targets + (1.0 - lam) * targets[::-1]).astype(np.float32), lam


class BatchMixer:
    """``per_batch_map`` for a MindSpore ``batch``: mixes each batch of epoch ``epoch`` (0-based) with an RNG keyed
    by (key, epoch, batch index), ``key`` being (seed, rank); ``first_batch`` is the index of the pipeline's first
    batch in the epoch (after a resume skips some). From epoch ``mixup_off_epoch`` + 1 on the targets stay plain
    (smoothed one-hot, same shape)."""

    def __init__(self, aug, num_classes: int, smoothing: float, key, epoch: int, first_batch: int = 0):
        self.aug, self.num_classes, self.smoothing = aug, num_classes, smoothing
        self.key, self.epoch, self.first_batch = [int(k) for k in key], epoch, first_batch
        self.mix = not (aug.mixup_off_epoch and epoch >= aug.mixup_off_epoch)

    def __call__(self, images, labels, batch_info):
        index = self.first_batch + batch_info.get_batch_num()
        rng = np.random.default_rng([*self.key, self.epoch, index])
        mixed, targets, _ = mix_batch(np.stack(images), np.asarray(labels, np.int64).reshape(-1), self.aug,
                                      self.num_classes, self.smoothing, rng, self.mix)
        return list(mixed), list(targets)
