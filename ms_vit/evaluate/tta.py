"""Test-time augmentation: the logits of a few fixed views of each image, averaged.

Modes (``--tta`` of eval.py, infer.py and calibrate.py):

* ``none``: the standard eval view (resize the short side to image_size / crop_pct, centre crop image_size);
* ``flip``: the standard view and its horizontal mirror;
* ``crops``: five crops of image_size: the centre and the four corners of a square of side
  ``crops_side(image_size, crop_pct)`` = image_size / min(crop_pct, 0.875) (the short side resized to it, then a
  square cut around the centre crop). With crop_pct <= 0.875 (ImageNet's 0.875, DINOv2's 224/256) that is the
  standard resize, so the centre crop is the standard view; a larger crop_pct (timm's 0.9, HF's 1.0) would leave
  the corners (almost) on the centre, so the resize is taken at 0.875 instead.

The logits (not the probabilities) are averaged: a temperature then scales the averaged logits as it scales a
single view's, and calibrate.py fits it on what eval and infer average.
"""

from __future__ import annotations

import numpy as np

MODES = ("none", "flip", "crops")
# The largest crop_pct crops TTA uses: at 0.875 the corners are image_size / 7 from the centre (32 px at 224).
CROPS_MAX_PCT = 0.875


def check_mode(mode: str) -> str:
    """``mode`` when it is one of MODES; otherwise a one-line ConfigError naming --tta and the valid values."""
    if mode not in MODES:
        from ms_vit.errors import ConfigError

        raise ConfigError(f"--tta {mode!r} is not a test-time augmentation: use one of {', '.join(MODES)}")
    return mode


def crops_side(image_size: int, crop_pct: float) -> int:
    """The side of the square the five crops are cut from (see the module docstring)."""
    return int(round(image_size / min(crop_pct, CROPS_MAX_PCT)))


def input_preprocess(prep: dict, mode: str) -> dict:
    """The preprocessing of the images ``views`` takes: for ``crops``, the short side resized to ``crops_side`` and
    a square of that side around the standard centre crop (``square``: ``data.folder.SquareAroundCentre``);
    otherwise ``prep`` itself."""
    if check_mode(mode) != "crops":
        return prep
    pct = min(prep["crop_pct"], CROPS_MAX_PCT)
    return {**prep, "crop_pct": pct, "square": crops_side(prep["image_size"], pct)}


def crop_offsets(side: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the five crops of ``size`` in a ``side`` square: centre, top-left, top-right, bottom-left,
    bottom-right. The centre offset is half the margin rounded down, as MindSpore's CenterCrop and
    ``SquareAroundCentre`` place it, so the centre crop is the standard eval view when the square is cut from the
    standard resize."""
    centre = (side - size) // 2
    far = side - size
    return [(centre, centre), (0, 0), (0, far), (far, 0), (far, far)]


def views(images: np.ndarray, mode: str, image_size: int) -> list[np.ndarray]:
    """The views of a batch (N, C, H, W) of normalised images that ``mode`` averages, the plain view first, each
    (N, C, image_size, image_size) and contiguous (a MindSpore Tensor needs that). For ``crops`` the batch must be
    the ``input_preprocess`` squares."""
    check_mode(mode)
    images = np.asarray(images)
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, np.ascontiguousarray(images[..., ::-1])]
    side = images.shape[-1]
    return [np.ascontiguousarray(images[..., top:top + image_size, left:left + image_size])
            for top, left in crop_offsets(side, image_size)]


def average_logits(call, images: np.ndarray, mode: str, image_size: int) -> np.ndarray:
    """The mean over ``views`` of ``call(view)`` (a batch of logits, any array type with ``asnumpy`` or a NumPy
    array), in float64: the TTA logits of the batch."""
    total = None
    parts = views(images, mode, image_size)
    for view in parts:
        out = call(view)
        out = np.asarray(out.asnumpy() if hasattr(out, "asnumpy") else out, np.float64)
        total = out if total is None else total + out
    return total / len(parts)


def net_logits(net, images: np.ndarray, mode: str, image_size: int | None = None) -> np.ndarray:
    """``average_logits`` of ``net`` (a ViT in eval mode; a compiled graph per view shape, which all views share)."""
    import mindspore as ms

    size = image_size or net.config.image_size
    return average_logits(lambda view: net(ms.Tensor(view)), images, mode, size)


def describe(mode: str) -> str:
    """One phrase for the console and the report."""
    return {"none": "none (the eval view)", "flip": "flip (mean logits of the image and its mirror)",
            "crops": "crops (mean logits of the centre and 4 corner crops)"}[check_mode(mode)]
