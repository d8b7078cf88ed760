"""Build models from a preset name, or from a checkpoint alone."""

from __future__ import annotations

import re

import numpy as np

from .checkpoint.load import load_params
from .checkpoint.pretrained_cfg import checkpoint_format, source_preprocess
from .checkpoint.read import CheckpointFile, read_checkpoint
from .config import ViTConfig, check_keys, model_config
from .errors import CheckpointError
from .model import ViT

# Heads are not stored in the weights' shapes; ViTs of every published size use 64 dimensions per head.
HEAD_DIM = 64


def create_model(name: str = "vit_b_16", num_classes: int | None = None, image_size: int | None = None,
                 pretrained: str | CheckpointFile | None = None, strict_head: bool = False, **overrides) -> ViT:
    """Build a ViT from a preset, optionally filled from a checkpoint.

    Args:
        name: one of ``ms_vit.PRESETS`` (vit_ti_16, vit_s_16, vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_tiny_test).
        num_classes: classifier outputs (default: the preset's, 1000 for the paper sizes).
        image_size: input side, divisible by the patch size (default: the preset's, 224 for the paper sizes).
        pretrained: checkpoint path (or a ``read_checkpoint`` result); its classifier is re-initialised when the
            class count differs and its position embedding resized when the image size differs (see
            ``net.load_report``). The net takes the weights' numerics (LayerNorm epsilon, GELU form: see
            ``source_numerics``) unless ``overrides`` set them (``net.numerics_source`` says which), and
            ``net.pretrained_cfg`` holds their preprocessing (mean, std, interpolation, crop_pct;
            ``net.pretrained_cfg_source`` says where it came from).
        strict_head: refuse a checkpoint whose class count differs instead of re-initialising the head.
        **overrides: any ``ViTConfig`` field (patch_size, embed_dim, num_layers, num_heads, mlp_dim, drop_rate,
            attention_drop_rate, drop_path_rate, layer_norm_eps, gelu, pool, patch_impl, in_channels), including
            TokenLearner: ``create_model("vit_b_16", token_learner_tokens=8, token_learner_layer=6)`` inserts it
            after block 6 (``token_fuser=True`` adds TokenFuser).
    """
    sizes = {k: v for k, v in (("num_classes", num_classes), ("image_size", image_size)) if v is not None}
    given = [k for k in ("layer_norm_eps", "gelu") if k in overrides]
    ckpt, numerics_source = None, f"the {name} preset"
    if pretrained is not None:
        ckpt = pretrained if isinstance(pretrained, CheckpointFile) else read_checkpoint(pretrained)
        # Weights trained with one GELU form and epsilon are fine-tuned with the same: the preset's are the tutorial's.
        numerics, numerics_source = source_numerics(ckpt)
        overrides = {**numerics, **overrides}
    cfg = model_config(name, **sizes, **overrides)
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


def config_from_params(params: dict, source: str = "<dict>") -> ViTConfig:
    """Work out the architecture of a tutorial-named checkpoint from its parameter shapes (64 dims per head)."""
    try:
        kernel = params["patch_embedding.conv.weight"]
        pos = params["pos_embedding"]
        head = params["dense.weight"]
        mlp = params["transformer.layers.0.1.cell.1.dense1.weight"]
    except KeyError as err:
        raise CheckpointError(f"{source} has no parameter {err.args[0]}: not a ViT checkpoint in the tutorial's "
                              "names; give the architecture with --model") from err
    layers = {name.split(".")[2] for name in params if name.startswith("transformer.layers.")}
    embed_dim, patch = int(pos.shape[2]), int(kernel.shape[2])
    grid = int(round(np.sqrt(pos.shape[1] - 1)))
    return ViTConfig(image_size=grid * patch, patch_size=patch, in_channels=int(kernel.shape[1]), embed_dim=embed_dim,
                     num_layers=len(layers), num_heads=max(embed_dim // HEAD_DIM, 1), mlp_dim=int(mlp.shape[0]),
                     num_classes=int(head.shape[0]))


HF_GELU = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


def config_from_hf(config: dict, source: str) -> tuple[dict, list | None]:
    """An HF ViTConfig (config.json) -> (ViTConfig fields, class names or None)."""
    act = config.get("hidden_act", "gelu")
    if act not in HF_GELU:
        raise CheckpointError(f"{source}: hidden_act {act!r} is not a GELU form ms_vit implements "
                              f"({', '.join(HF_GELU)})")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
               if k not in config]
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
              "mlp_dim": config["intermediate_size"], "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
              "gelu": HF_GELU[act]}
    return fields, names


def source_numerics(ckpt: CheckpointFile) -> tuple[dict, str]:
    """The LayerNorm epsilon and GELU form the checkpoint's weights were trained with, and where that came from.

    In order: ms_vit metadata (the architecture it was trained with), an HF folder's config.json (layer_norm_eps,
    hidden_act), else the source's convention by layout (``SOURCE_NUMERICS``: tutorial 1e-7/tanh, timm 1e-6/erf,
    mindcv 1e-6/tanh, HF 1e-12/erf, npz 1e-6/erf). Returns ({"layer_norm_eps": .., "gelu": ..}, where).
    """
    from .checkpoint.convert import SOURCE_NUMERICS

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

    Reads ms_vit/MindSpore ``.ckpt`` (tutorial, ms_vit and mindcv names), timm and HF ``.safetensors``, HF model
    folders, and Google ``.npz``. The architecture comes from ms_vit's metadata, else HF's config.json, else the
    parameter shapes (heads: the .npz kernels or config, else 64 dimensions per head), else ``model`` (a preset).
    LayerNorm epsilon and GELU form follow the source (``source_numerics``: tutorial 1e-7/tanh, timm 1e-6/erf, HF
    config, npz 1e-6/erf), and ``net.pretrained_cfg`` holds its preprocessing (``source_preprocess``: mean, std,
    interpolation, crop_pct; ``net.pretrained_cfg_source`` says where it came from).
    ``net.class_names`` holds the source's class names when it has them. ``num_classes`` (re-initialising the head
    when it differs) and ``overrides`` (any ViTConfig field) change the result.
    """
    from .checkpoint.convert import npz_num_heads
    from .checkpoint.load import to_model_names

    ckpt = read_checkpoint(path)
    names = ckpt.meta.get("class_names")
    if ckpt.meta.get("model") and model is None:
        base = dict(ckpt.meta["model"])
        check_keys(base, ViTConfig.__dataclass_fields__, f"model option in {ckpt.path} metadata")
    else:
        params, _, fmt, _ = to_model_names(ckpt.params, {"pos_embedding"}, ckpt.path)
        shapes = config_from_params(params, ckpt.path)
        numerics, _ = source_numerics(ckpt)
        base = {**shapes.to_dict(), **numerics}
        if fmt == "npz":
            base["num_heads"] = npz_num_heads(ckpt.params) or base["num_heads"]
        if ckpt.source_config:
            hf_fields, names = config_from_hf(ckpt.source_config, ckpt.path)
            base.update(hf_fields)
        if model is not None:
            base.update(model_config(model, num_classes=shapes.num_classes, image_size=shapes.image_size).to_dict(),
                        **numerics)
    check_keys(overrides, ViTConfig.__dataclass_fields__, "model option")
    if num_classes is not None:
        base["num_classes"] = num_classes
    net = ViT(ViTConfig(**{**base, **overrides}))
    net.model_name = ckpt.meta.get("model_name", model or "custom")
    net.class_names = names if names and len(names) == net.config.num_classes else None
    net.load_report = load_params(net, ckpt.params, source=ckpt.path, meta=ckpt.meta)
    net.pretrained_cfg, net.pretrained_cfg_source = source_preprocess(ckpt, net.load_report.format)
    return net
