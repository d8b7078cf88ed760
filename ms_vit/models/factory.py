"""Build models from a preset name, or from a checkpoint alone."""

from __future__ import annotations

import os
import re

import numpy as np

from ms_vit.checkpoint.load import load_params
from ms_vit.checkpoint.pretrained_cfg import checkpoint_format, source_preprocess
from ms_vit.checkpoint.read import CheckpointFile, read_checkpoint
from ms_vit.config import ViTConfig, check_keys, model_config
from ms_vit.errors import CheckpointError
from ms_vit.models.vit import ViT, block_index

# Heads are not stored in the weights' shapes; ViTs of every published size use 64 dimensions per head.
HEAD_DIM = 64


def create_model(name: str | None = "vit_b_16", num_classes: int | None = None, image_size: int | None = None,
                 pretrained: str | CheckpointFile | None = None, strict_head: bool = False, **overrides) -> ViT:
    """Build a ViT from a preset, or from the architecture its pretrained weights describe, optionally loaded.

    Args:
        name: one of ``ms_vit.PRESETS`` (vit_ti_16, vit_s_16, vit_b_16, vit_b_32, vit_l_16, vit_l_32, dinov2_s14,
            dinov2_b14, dinov2_l14 and their ``_reg`` variants, vit_tiny_test). None or "" with ``pretrained``: the
            architecture the weights describe (``architecture_of``: metadata, config.json, shapes), as
            ``from_pretrained`` does; without weights, vit_b_16. A preset that disagrees with the weights' architecture
            is a CheckpointError naming both.
        num_classes: classifier outputs (default: the preset's, 1000 for the paper sizes; from the weights: theirs).
        image_size: input side, divisible by the patch size (default: the preset's, 224 for the paper sizes).
        pretrained: checkpoint path (or a ``read_checkpoint`` result); its classifier is re-initialised when the
            class count differs or the weights have none, and its position embedding resized when the image size
            differs, the way its source resizes (see ``net.load_report``). The net takes the weights' numerics
            (LayerNorm epsilon, GELU form: see ``source_numerics``) unless ``overrides`` set them
            (``net.numerics_source`` says which), and ``net.pretrained_cfg`` holds their preprocessing (mean, std,
            interpolation, crop_pct; ``net.pretrained_cfg_source`` says where it came from).
        strict_head: refuse a checkpoint whose class count differs instead of re-initialising the head.
        **overrides: any ``ViTConfig`` field (patch_size, embed_dim, num_layers, num_heads, mlp_dim, drop_rate,
            attention_drop_rate, drop_path_rate, layer_norm_eps, gelu, pool, layer_scale, num_register_tokens,
            patch_impl, in_channels), including TokenLearner: ``create_model("vit_b_16", token_learner_tokens=8,
            token_learner_layer=6)`` inserts it after block 6 (``token_fuser=True`` adds TokenFuser).
    """
    sizes = {k: v for k, v in (("num_classes", num_classes), ("image_size", image_size)) if v is not None}
    given = [k for k in ("layer_norm_eps", "gelu") if k in overrides]
    ckpt, numerics_source = None, f"the {name} preset"
    if pretrained is not None:
        ckpt = pretrained if isinstance(pretrained, CheckpointFile) else read_checkpoint(pretrained)
        # Weights trained with one GELU form and epsilon are fine-tuned with the same: the preset's are the tutorial's.
        numerics, numerics_source = source_numerics(ckpt)
        overrides = {**numerics, **overrides}
    if name:
        cfg = model_config(name, **sizes, **overrides)
        if ckpt is not None:
            check_preset_matches(name, cfg, ckpt)
    elif ckpt is not None:
        base, _ = architecture_of(ckpt)
        check_keys(overrides, ViTConfig.__dataclass_fields__, "model option")
        cfg = ViTConfig(**{**base, **sizes, **overrides})
        name = ckpt.meta.get("model_name") or os.path.basename(os.path.normpath(ckpt.path))
    else:
        name = "vit_b_16"
        cfg = model_config(name, **sizes, **overrides)
        numerics_source = f"the {name} preset"
    net = ViT(cfg)
    net.model_name = name
    net.numerics_source = (f"{', '.join(given)} given" + (f"; the rest from {numerics_source}" if len(given) < 2 else "")
                           if given else f"from {numerics_source}")
    net.load_report = None
    net.pretrained_cfg, net.pretrained_cfg_source = None, None
    if ckpt is not None:
        net.load_report = load_params(net, ckpt.params, source=ckpt.path, strict_head=strict_head, meta=ckpt.meta)
        net.pretrained_cfg, net.pretrained_cfg_source = source_preprocess(ckpt, net.load_report.format)
    return net


# The fields a weight file fixes: a preset that differs in one of them cannot hold the weights.
SHAPE_FIELDS = ("patch_size", "embed_dim", "num_layers", "mlp_dim", "num_register_tokens")


def check_preset_matches(name: str, cfg: ViTConfig, ckpt: CheckpointFile, weights: dict | None = None) -> None:
    """Raise a one-line CheckpointError when preset ``name`` (built as ``cfg``) is not the architecture of
    ``ckpt``'s weights (``weights``: ``architecture_of(ckpt)``'s fields, when the caller has them already).

    Weights whose architecture cannot be read (not a ViT at all) pass: loading them says what is missing."""
    if weights is None:
        try:
            weights, _ = architecture_of(ckpt)
        except CheckpointError:
            return
    weights = {**ViTConfig().to_dict(), **weights}  # metadata of older files lacks the newer fields: their defaults
    differ = [f"{k} {getattr(cfg, k)} vs {weights[k]}" for k in SHAPE_FIELDS if getattr(cfg, k) != weights.get(k)]
    if bool(cfg.layer_scale) != bool(weights.get("layer_scale")):
        differ.append(f"LayerScale {'yes' if cfg.layer_scale else 'no'} vs {'yes' if weights.get('layer_scale') else 'no'}")
    if differ:
        raise CheckpointError(f"--model {name} is not the architecture of {ckpt.path} ({'; '.join(differ)}, model vs "
                              "weights): leave --model out to take the architecture from the weights, or pick the "
                              "matching preset")


def architecture_of(ckpt: CheckpointFile) -> tuple[dict, list | None]:
    """The ViTConfig fields of the architecture a read checkpoint holds, and its class names (or None).

    In order: ms_vit metadata; an HF folder's config.json (ViT, Dinov2, Dinov2WithRegisters); else the parameter
    shapes (heads: a Google .npz's kernels, else 64 dimensions per head). Numerics (epsilon, GELU) follow
    ``source_numerics``. Raises CheckpointError when the weights are not a ViT.
    """
    from ms_vit.checkpoint.convert import npz_num_heads
    from ms_vit.checkpoint.load import to_model_names

    if ckpt.meta.get("model"):
        base = dict(ckpt.meta["model"])
        check_keys(base, ViTConfig.__dataclass_fields__, f"model option in {ckpt.path} metadata")
        return base, ckpt.meta.get("class_names")
    params, _, fmt, _ = to_model_names(ckpt.params, {"pos_embedding"}, ckpt.path)
    shapes = config_from_params(params, ckpt.path, fmt)
    numerics, _ = source_numerics(ckpt)
    base = {**shapes.to_dict(), **numerics}
    names = None
    if fmt == "npz":
        base["num_heads"] = npz_num_heads(ckpt.params) or base["num_heads"]
    if ckpt.source_config:
        hf_fields, names = config_from_hf(ckpt.source_config, ckpt.path)
        base.update(hf_fields)
        crop = _crop_side(ckpt.preprocessor_config) if fmt == "hf_dinov2" else None
        if crop:  # DINOv2 runs at its processor's crop (224), its 518-px grid resized to it, as transformers does
            base["image_size"] = crop
    return base, names


def _crop_side(preprocessor: dict) -> int | None:
    crop = preprocessor.get("crop_size") if preprocessor.get("do_center_crop", True) else None
    side = crop.get("height") if isinstance(crop, dict) else crop
    return int(side) if isinstance(side, (int, float)) and side > 0 else None


def config_from_params(params: dict, source: str = "<dict>", fmt: str = "tutorial") -> ViTConfig:
    """Work out the architecture of a tutorial-named checkpoint from its parameter shapes (64 dims per head).

    LayerScale and register tokens show as parameters; the head's input width tells "cls_mean" from "cls". A file
    without a head (a backbone) gets 1000 classes and, for DINOv2 sources, the "cls_mean" head input of DINOv2's
    linear evaluation.
    """
    try:
        kernel = params["patch_embedding.conv.weight"]
        pos = params["pos_embedding"]
        mlp = params["transformer.layers.0.1.cell.1.dense1.weight"]
    except KeyError as err:
        raise CheckpointError(f"{source} has no parameter {err.args[0]}: not a ViT checkpoint in the tutorial's "
                              "names; give the architecture with --model") from err
    layers = {block_index(name) for name in params} - {None}
    embed_dim, patch = int(pos.shape[2]), int(kernel.shape[2])
    grid = int(round(np.sqrt(pos.shape[1] - 1)))
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"{source}: its position embedding has {pos.shape[1] - 1} patch positions, not a square "
                              "grid: ms_vit reads square grids only; the file is damaged or not a ViT of square images")
    head = params.get("dense.weight")
    dinov2 = fmt in ("hf_dinov2", "timm_dinov2")
    pool = ("cls_mean" if head.shape[1] == 2 * embed_dim else "cls") if head is not None else (
        "cls_mean" if dinov2 else "cls")
    scaled = "transformer.layers.0.0.layer_scale.gamma" in params
    registers = params.get("register_tokens")
    return ViTConfig(image_size=grid * patch, patch_size=patch, in_channels=int(kernel.shape[1]), embed_dim=embed_dim,
                     num_layers=len(layers), num_heads=max(embed_dim // HEAD_DIM, 1), mlp_dim=int(mlp.shape[0]),
                     num_classes=int(head.shape[0]) if head is not None else 1000, pool=pool,
                     layer_scale=1.0 if scaled else 0.0,
                     num_register_tokens=int(registers.shape[1]) if registers is not None else 0)


HF_GELU = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


DINOV2_TYPES = ("dinov2", "dinov2_with_registers")


def config_from_hf(config: dict, source: str) -> tuple[dict, list | None]:
    """An HF ViTConfig or Dinov2Config / Dinov2WithRegistersConfig (config.json) -> (ViTConfig fields, class names
    or None)."""
    act = config.get("hidden_act", "gelu")
    if act not in HF_GELU:
        raise CheckpointError(f"{source}: hidden_act {act!r} is not a GELU form ms_vit implements "
                              f"({', '.join(HF_GELU)})")
    dinov2 = config.get("model_type") in DINOV2_TYPES
    if dinov2 and config.get("use_swiglu_ffn"):
        raise CheckpointError(f"{source}/config.json: use_swiglu_ffn (DINOv2 giant's SwiGLU MLP) is not implemented "
                              "in ms_vit; use the S, B or L model")
    width = ("mlp_ratio",) if dinov2 else ("intermediate_size",)
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", *width) if k not in config]
    if missing:
        raise CheckpointError(f"{source}/config.json lacks {', '.join(missing)}: not an HF ViT config; download the "
                              "model folder again")
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    if names and all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        names = None  # transformers' placeholders, not class names
    fields = {"image_size": config.get("image_size", 224), "patch_size": config.get("patch_size", 16),
              "in_channels": config.get("num_channels", 3), "embed_dim": config["hidden_size"],
              "num_layers": config["num_hidden_layers"], "num_heads": config["num_attention_heads"],
              "mlp_dim": config.get("intermediate_size") or int(config["hidden_size"] * config["mlp_ratio"]),
              "layer_norm_eps": config.get("layer_norm_eps", 1e-12), "gelu": HF_GELU[act]}
    if dinov2:
        fields.update(layer_scale=float(config.get("layerscale_value", 1.0)) or 1.0, pool="cls_mean",
                      num_register_tokens=int(config.get("num_register_tokens", 0)))
    return fields, names


def source_numerics(ckpt: CheckpointFile) -> tuple[dict, str]:
    """The LayerNorm epsilon and GELU form the checkpoint's weights were trained with, and where that came from.

    In order: ms_vit metadata (the architecture it was trained with), an HF folder's config.json (layer_norm_eps,
    hidden_act), else the source's convention by layout (``SOURCE_NUMERICS``: tutorial 1e-7/tanh, timm 1e-6/erf,
    mindcv 1e-6/tanh, HF 1e-12/erf, npz 1e-6/erf). Returns ({"layer_norm_eps": .., "gelu": ..}, where).
    """
    from ms_vit.checkpoint.convert import SOURCE_NUMERICS

    model = ckpt.meta.get("model") or {}
    if "layer_norm_eps" in model or "gelu" in model:
        return {k: model[k] for k in ("layer_norm_eps", "gelu") if k in model}, f"{ckpt.path} metadata"
    if ckpt.source_config:
        fields, _ = config_from_hf(ckpt.source_config, ckpt.path)
        return {"layer_norm_eps": fields["layer_norm_eps"], "gelu": fields["gelu"]}, f"{ckpt.path}/config.json"
    fmt = checkpoint_format(ckpt)
    eps, gelu = SOURCE_NUMERICS.get(fmt, SOURCE_NUMERICS["tutorial"])
    what = f"the {fmt} layout's convention" if fmt in SOURCE_NUMERICS else "the tutorial's (layout unknown)"
    return {"layer_norm_eps": eps, "gelu": gelu}, f"{what} for {ckpt.path}"


def from_pretrained(path: str, num_classes: int | None = None, model: str | None = None, **overrides) -> ViT:
    """Build the model a weight file describes, with its source's numerics, and load it.

    Reads ms_vit/MindSpore ``.ckpt`` (tutorial, ms_vit and mindcv names), timm and HF ``.safetensors`` (ViT and
    DINOv2), HF model folders, Google ``.npz``, and hub names ``hf-hub:ORG/NAME[@REVISION]``. The architecture comes
    from ``architecture_of`` (ms_vit's metadata, else HF's config.json, else the parameter shapes); ``model`` (a
    preset) must agree with it. LayerNorm epsilon and GELU form follow the source (``source_numerics``: tutorial
    1e-7/tanh, timm 1e-6/erf, HF config, npz 1e-6/erf, DINOv2 1e-6/erf), and ``net.pretrained_cfg`` holds its
    preprocessing (``source_preprocess``: mean, std, interpolation, crop_pct; ``net.pretrained_cfg_source`` says
    where it came from). ``net.class_names`` holds the source's class names when it has them. ``num_classes``
    (re-initialising the head when it differs) and ``overrides`` (any ViTConfig field) change the result.
    """
    ckpt = read_checkpoint(resolve_weights(path)[0])
    base, names = architecture_of(ckpt)
    if model is not None and not ckpt.meta.get("model"):
        numerics, _ = source_numerics(ckpt)
        preset = model_config(model, num_classes=base["num_classes"], image_size=base["image_size"], **numerics)
        check_preset_matches(model, preset, ckpt, base)
        base = {**base, **preset.to_dict()}
    check_keys(overrides, ViTConfig.__dataclass_fields__, "model option")
    if num_classes is not None:
        base["num_classes"] = num_classes
    net = ViT(ViTConfig(**{**base, **overrides}))
    net.model_name = ckpt.meta.get("model_name", model or "custom")
    net.class_names = names if names and len(names) == net.config.num_classes else None
    net.load_report = load_params(net, ckpt.params, source=ckpt.path, meta=ckpt.meta)
    net.pretrained_cfg, net.pretrained_cfg_source = source_preprocess(ckpt, net.load_report.format)
    return net


def resolve_weights(source: str, log=print) -> tuple[str, dict]:
    """A local path for ``source`` and what to record of where it came from: a hub name (``hf-hub:ORG/NAME[@REV]``)
    is fetched once into the shared HF cache (``ms_vit.checkpoint.hub``); a path is returned as it is."""
    from ms_vit.checkpoint.hub import is_hub_name, resolve_hub

    if is_hub_name(source):
        hub = resolve_hub(source, log=log)
        return hub.path, {"hub_name": hub.name, "hub_revision": hub.revision}
    return source, {}
