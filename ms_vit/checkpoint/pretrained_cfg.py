"""The preprocessing that travels with a checkpoint (timm's ``pretrained_cfg`` idea): mean/std, resize interpolation
and crop ratio, per source, in one table; and the one function that resolves a run's preprocessing from it.

Weights are only as good as the input they were trained on: a ViT trained on images scaled to [-1, 1] (Google's,
HF's, timm's augreg) and fed ImageNet-normalised ones loses accuracy before fine-tuning starts. Mean and std are in
0..255 pixel units, as ms_vit's Normalize (and the tutorial's) works on raw pixels.
"""

from __future__ import annotations

from ms_vit.config import IMAGENET_MEAN, IMAGENET_STD
from ms_vit.errors import CheckpointError
from ms_vit.checkpoint.adapt import split_optimizer_state, strip_prefixes
from ms_vit.checkpoint.convert import detect_format

PREPROCESS_KEYS = ("mean", "std", "interpolation", "crop_pct")
INTERPOLATIONS = ("bilinear", "bicubic")
HALF = [127.5, 127.5, 127.5]  # mean = std = 0.5 on 0..1: pixels scaled to [-1, 1]

_IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bilinear", "crop_pct": 0.875}

# Each source's own preprocessing, for files that carry none (README "Weights from elsewhere" shows this table):
#   tutorial: the MindSpore ViT tutorial's pipeline (Normalize ImageNet x255, Resize 256 bilinear, CenterCrop 224);
#   mindcv: its transforms_imagenet_eval defaults (ImageNet, bilinear, crop_pct 0.875);
#   timm: vision_transformer.py's _cfg (the augreg/orig ViT weights): inception mean/std, bicubic, crop_pct 0.9;
#   hf: ViTImageProcessor's defaults (google/vit-*): 0.5/0.5, bilinear, resized straight to the input size;
#   npz: vit_jax's input_pipeline eval: (x - 127.5) / 127.5, tf.image.resize (bilinear) straight to the input size;
#   hf_dinov2, timm_dinov2: DINOv2's evaluation transform (facebook/dinov2-* preprocessor_config.json): ImageNet
#   mean/std, resize 256 bicubic, centre crop 224.
_DINOV2 = {**_IMAGENET, "interpolation": "bicubic", "crop_pct": 224 / 256}
SOURCE_PREPROCESS = {
    "tutorial": dict(_IMAGENET),
    "mindcv": dict(_IMAGENET),
    "timm": {"mean": HALF, "std": HALF, "interpolation": "bicubic", "crop_pct": 0.9},
    "hf": {"mean": HALF, "std": HALF, "interpolation": "bilinear", "crop_pct": 1.0},
    "npz": {"mean": HALF, "std": HALF, "interpolation": "bilinear", "crop_pct": 1.0},
    "hf_dinov2": dict(_DINOV2),
    "timm_dinov2": dict(_DINOV2),
}
SOURCE_NAMES = {"tutorial": "the MindSpore tutorial's", "mindcv": "mindcv's", "timm": "timm's ViT default",
                "hf": "HF ViTImageProcessor's default", "npz": "Google vision_transformer's",
                "hf_dinov2": "DINOv2's (transformers)", "timm_dinov2": "DINOv2's (timm)"}
DEFAULT_PREPROCESS = dict(_IMAGENET)  # no pretrained weights: the tutorial's (ImageNet's) preprocessing

# PIL's resampling codes, as HF's preprocessor_config.json stores them.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def checkpoint_format(ckpt) -> str:
    """The layout of a read checkpoint's parameters ("tutorial", "timm", "mindcv", "hf", "npz" or "unknown")."""
    params, _ = strip_prefixes(ckpt.params, {"pos_embedding"})
    params, _ = split_optimizer_state(params)
    return detect_format(params)


def _channels(value, key: str, where: str) -> list:
    """Three per-channel values in 0..255 from a 0..1 scalar or list."""
    values = [value] * 3 if isinstance(value, (int, float)) else list(value or [])
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise CheckpointError(f"{where}: {key} must be 3 numbers (one per RGB channel), got {value!r}; fix the file "
                              "or give --mean/--std")
    return [float(v) * 255.0 for v in values]


def _side(size, key: str = "height"):
    if isinstance(size, dict):
        return size.get(key) or size.get("shortest_edge")
    return size[0] if isinstance(size, (list, tuple)) else size


def from_preprocessor_config(config: dict, where: str) -> dict:
    """HF's preprocessor_config.json -> ms_vit's preprocessing; what it leaves out is ViTImageProcessor's default.

    crop_pct: the file's own, else crop_size / size when it centre-crops (DeiT: 224 / 256), else 1.0 (ViT resizes
    straight to the input size).
    """
    prep = dict(SOURCE_PREPROCESS["hf"])
    if config.get("image_mean") is not None:
        prep["mean"] = _channels(config["image_mean"], "image_mean", where)
    if config.get("image_std") is not None:
        prep["std"] = _channels(config["image_std"], "image_std", where)
    if config.get("resample") is not None:
        prep["interpolation"] = PIL_RESAMPLE.get(config["resample"], f"resample {config['resample']!r}")
    if config.get("crop_pct"):
        prep["crop_pct"] = float(config["crop_pct"])
    elif config.get("do_center_crop") and _side(config.get("crop_size")) and _side(config.get("size")):
        prep["crop_pct"] = float(_side(config["crop_size"])) / float(_side(config["size"]))
    return prep


def from_timm_cfg(cfg: dict, where: str) -> dict:
    """timm's pretrained_cfg (mean/std on 0..1, interpolation by name, crop_pct) -> ms_vit's preprocessing."""
    prep = dict(SOURCE_PREPROCESS["timm"])
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            prep[key] = _channels(cfg[key], key, where)
    if cfg.get("interpolation"):
        prep["interpolation"] = str(cfg["interpolation"])
    if cfg.get("crop_pct"):
        prep["crop_pct"] = float(cfg["crop_pct"])
    return prep


def source_preprocess(ckpt, fmt: str | None = None) -> tuple[dict, str]:
    """The preprocessing a read checkpoint's weights were trained with, and where that came from (for the log).

    In order: ms_vit metadata (mean, std, crop_pct, interpolation; a key an older file lacks comes from its layout's
    entry, and a missing interpolation means bilinear, the only one ms_vit used before), an HF folder's
    preprocessor_config.json, a timm folder's pretrained_cfg, else the ``SOURCE_PREPROCESS`` entry of its layout.
    Not validated: ``resolve_preprocess`` checks the result.
    """
    fmt = fmt or checkpoint_format(ckpt)
    base = dict(SOURCE_PREPROCESS.get(fmt, DEFAULT_PREPROCESS))
    found = [k for k in PREPROCESS_KEYS if ckpt.meta.get(k) not in (None, "", [])]
    if found:
        prep = {**base, "interpolation": "bilinear", **{k: ckpt.meta[k] for k in found}}
        return prep, f"{ckpt.path} metadata"
    if ckpt.preprocessor_config:
        where = f"{ckpt.path}/preprocessor_config.json"
        return from_preprocessor_config(ckpt.preprocessor_config, where), where
    if ckpt.pretrained_cfg:
        where = f"{ckpt.path}/config.json pretrained_cfg"
        return from_timm_cfg(ckpt.pretrained_cfg, where), where
    if ckpt.source_config:
        return base, f"{SOURCE_NAMES.get(fmt, SOURCE_NAMES['hf'])} ({ckpt.path} has no preprocessor_config.json)"
    if fmt in SOURCE_NAMES:
        return base, f"{SOURCE_NAMES[fmt]} preprocessing for {ckpt.path} (the file carries none)"
    return base, f"ImageNet's, the default ({ckpt.path} says nothing)"


def resolve_preprocess(overrides: dict, source: tuple[dict, str] | None = None) -> tuple[dict, str]:
    """A run's preprocessing: the keys of ``overrides`` that are set (not empty, not 0) win, the rest come from
    ``source`` (``source_preprocess``'s answer for the pretrained weights), else ImageNet's.

    Returns (mean, std, interpolation, crop_pct dict; a human string of where each came from).
    Raises CheckpointError for an interpolation ms_vit does not resize with (bilinear, bicubic).
    """
    base, where = source if source is not None else (dict(DEFAULT_PREPROCESS), "ImageNet's, the default without "
                                                                              "pretrained weights")
    given = {k: overrides[k] for k in PREPROCESS_KEYS if overrides.get(k) not in (None, "", 0, 0.0, [])}
    prep = {k: given.get(k, base[k]) for k in PREPROCESS_KEYS}
    prep["mean"], prep["std"] = [float(v) for v in prep["mean"]], [float(v) for v in prep["std"]]
    prep["crop_pct"] = float(prep["crop_pct"])
    taken = [k for k in PREPROCESS_KEYS if k not in given]
    if not given:
        text = f"from {where}"
    elif not taken:
        text = "all set by the run's configuration"
    else:
        text = f"{', '.join(given)} set by the run's configuration; {', '.join(taken)} from {where}"
    if prep["interpolation"] not in INTERPOLATIONS:
        raise CheckpointError(f"{where}: interpolation {prep['interpolation']!r} is not one ms_vit resizes with "
                              f"({', '.join(INTERPOLATIONS)}): pass --interpolation bilinear or bicubic")
    if len(prep["mean"]) != 3 or len(prep["std"]) != 3 or min(prep["std"]) <= 0 or not prep["crop_pct"] > 0:
        raise CheckpointError(f"{where}: mean/std need 3 values each (std positive) and crop_pct must be positive, "
                              f"got {prep['mean']}, {prep['std']}, {prep['crop_pct']}: give --mean, --std, --crop_pct")
    return prep, text


def _stat(values) -> str:
    scaled = [round(v / 255.0, 3) for v in values]
    return f"{scaled[0]:g}" if len(set(scaled)) == 1 else "(" + ", ".join(f"{v:g}" for v in scaled) + ")"


def describe_preprocess(prep: dict) -> str:
    """One phrase for the log: "mean/std 0.5/0.5 (x255), bicubic, crop_pct 0.9"."""
    mean, std = _stat(prep["mean"]), _stat(prep["std"])
    stats = f"mean/std {mean}/{std}" if "(" not in mean + std else f"mean {mean} std {std}"
    return f"{stats} (x255), {prep['interpolation']}, crop_pct {prep['crop_pct']:g}"
