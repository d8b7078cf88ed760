"""The stronger training augmentation of timm / mindcv fine-tuning (auto-augment, colour jitter, random erasing):
MindSpore's own ``mindspore.dataset.vision`` ops, but for random erasing.

``extra_train_ops`` gives the ops that go around Normalize and HWC2CHW in the training pipeline
(``data.train_transforms``, ``cifar.train_dataset``); with every key at its default it gives nothing, and training
augments exactly as before (crop and flip only).

Reproducibility: the auto-augment and colour-jitter ops are MindSpore's own and draw from the pipeline's random seed
(``mindspore.dataset.config.set_seed``, which the training pipeline sets per epoch), not from ms_vit's per-sample
generator. A run repeats, but a mid-epoch resume with either of them on is not bit-exact: the resumed epoch leaves
out its first samples, so the others get different draws from the ones the uninterrupted run gave them (their crop
and flip, and mixup / cutmix, are still exactly the same). Random erasing is ms_vit's own op (``RandomErasing``
says why), seeded per image, so on its own it does not break an exact resume.
"""

from __future__ import annotations

import math
import zlib

import numpy as np


def extra_train_ops(cfg) -> tuple[list, list]:
    """(ops on the uint8 HWC RGB crop, before Normalize; ops on the normalised CHW float32 image, after HWC2CHW)

    From ``cfg`` (a TrainConfig): ``auto_augment`` ("none", "randaugment", "trivialaugment", "autoaugment"; RandAugment
    takes ``aa_num_ops`` ops of magnitude ``aa_magnitude`` in 0..30), ``color_jitter`` (brightness, contrast and
    saturation factors from [1 - x, 1 + x]; only when auto_augment is "none", as in timm) and ``random_erasing``
    (the probability of setting a random rectangle of the normalised image to 0, the mean pixel). All off: ([], []).
    """
    from mindspore.dataset import vision

    before, after = [], []
    if cfg.auto_augment != "none":
        before.append(_auto_augment(cfg))
    elif cfg.color_jitter > 0:
        # timm's transforms_imagenet_train turns colour jitter off whenever auto-augment is on (the policies already
        # change brightness, contrast and colour), and mindcv's does the same: follow them, so a recipe gives the
        # same augmentation here as there. A set color_jitter with auto_augment on therefore does nothing.
        low, high = max(0.0, 1.0 - cfg.color_jitter), 1.0 + cfg.color_jitter  # torchvision clamps the low end at 0
        factors = (float(low), float(high))
        before.append(vision.RandomColorAdjust(brightness=factors, contrast=factors, saturation=factors))
    if cfg.random_erasing > 0:
        # After HWC2CHW, where timm has it: erasing to 0 after normalisation fills with the mean pixel.
        after.append(RandomErasing(float(cfg.random_erasing)))
    return before, after


class RandomErasing:
    """timm's RandomErasing in its default "const" mode, on one normalised CHW float32 image: with probability
    ``prob``, one rectangle of 2 % to 1/3 of the image, aspect ratio log-uniform in [0.3, 1/0.3], set to 0 (the mean
    pixel); when 10 draws all give a rectangle that does not fit, the image is left as it is.

    Not MindSpore's ``vision.RandomErasing``, although it does run on CHW float32: that op draws from Python's global
    ``random``, shared by the map's worker threads in whatever order they run, so with more than one worker (ms_vit's
    default) the same run gives different rectangles each time, where every other op of the pipeline repeats; and it
    draws the aspect ratio uniformly from [0.3, 3.3], so about three rectangles in four are wider than tall (timm:
    one in two).
    Here each image's draws come from a generator seeded with the image itself (a CRC of its bytes, which differ
    with each epoch's crop and flip) and the pipeline seed: the same run repeats whatever the worker count, and,
    with auto-augment and colour jitter off, a mid-epoch resume erases exactly as the uninterrupted run.
    """

    def __init__(self, prob: float, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3), attempts: int = 10):
        self.prob, self.scale, self.attempts = prob, tuple(scale), attempts
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.pipeline_seed = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.pipeline_seed is None:
            # Read on the first image rather than here: data.train_dataset sets the epoch's seed after building
            # the ops, before iterating. Every worker reads the same value, so the race is harmless.
            import mindspore.dataset as ds

            self.pipeline_seed = ds.config.get_seed()
        image = np.ascontiguousarray(image)
        rng = np.random.default_rng([zlib.crc32(image), self.pipeline_seed])
        if rng.random() >= self.prob:
            return image
        _, height, width = image.shape
        for _ in range(self.attempts):
            area = rng.uniform(*self.scale) * height * width
            ratio = math.exp(rng.uniform(*self.log_ratio))
            h, w = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if h < height and w < width:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                image = image.copy()  # the pipeline's array may be shared or read-only
                image[:, top:top + h, left:left + w] = 0
                return image
        return image


def _auto_augment(cfg):
    """The MindSpore op for ``cfg.auto_augment``, filling and resampling as timm does for the run's preprocessing."""
    from mindspore.dataset import vision

    from ms_vit.checkpoint.pretrained_cfg import resolve_preprocess

    # The same resolution as data.train_dataset: fine_tune has already put the weights' preprocessing into cfg, and a
    # bare config gets ImageNet's.
    prep, _ = resolve_preprocess(cfg.preprocess_overrides())
    # timm fills the corners that rotate, shear and translate uncover with the mean pixel (its img_mean), so they
    # normalise to 0 rather than to a strong black; MindSpore's default fill is 0 (black).
    fill = tuple(int(min(255, max(0, round(m)))) for m in prep["mean"])
    # timm resamples the geometric ops with the run's interpolation. These ops refuse Inter.PILCUBIC (the eval
    # resize's bicubic), so bicubic here is OpenCV's (Inter.BICUBIC); their own default, NEAREST, would be blockier.
    inter = vision.Inter.BICUBIC if prep["interpolation"] == "bicubic" else vision.Inter.BILINEAR
    # A quirk of MindSpore 2.10 that no argument changes: RandAugment and TrivialAugmentWide take the negative
    # direction of the signed ops (rotate, shear, translate, darker, ...) one time in three, not one in two.
    if cfg.auto_augment == "randaugment":
        # 31 bins, the range config/train.py allows (0..30): each op goes magnitude / 30 of the way to its strongest
        # (torchvision's scale). timm's scale is magnitude / 10, so its "rand-m9" (DeiT's) is magnitude 27 here.
        # Unlike timm, MindSpore applies all num_ops ops (timm: each with probability 0.5).
        return vision.RandAugment(num_ops=int(cfg.aa_num_ops), magnitude=int(cfg.aa_magnitude), num_magnitude_bins=31,
                                  interpolation=inter, fill_value=fill)
    if cfg.auto_augment == "trivialaugment":
        return vision.TrivialAugmentWide(num_magnitude_bins=31, interpolation=inter, fill_value=fill)
    if cfg.auto_augment == "autoaugment":
        # The ImageNet policy of Cubuk et al. (torchvision's, timm's "original"); config/train.py allows no other.
        return vision.AutoAugment(policy=vision.AutoAugmentPolicy.IMAGENET, interpolation=inter, fill_value=fill)
    from ms_vit.errors import ConfigError

    raise ConfigError(f"auto_augment must be one of none, randaugment, trivialaugment, autoaugment, got "
                      f"{cfg.auto_augment!r}")
