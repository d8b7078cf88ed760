"""The network's configuration: one dataclass (ViTConfig), the size presets, and override checking.

Field names follow the MindSpore ViT tutorial's constructor (``patch_size``, ``embed_dim``, ``num_layers``,
``num_heads``, ``mlp_dim``); the numeric defaults are the tutorial's too (``nn.LayerNorm`` epsilon 1e-7,
``nn.GELU`` tanh approximation), so ``vit_b_16`` reproduces the tutorial's network exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from ms_vit.errors import ConfigError

GELU_FORMS = ("tanh", "erf")
POOLS = ("cls", "mean", "cls_mean")
PATCH_IMPLS = ("matmul", "conv")
GELU_IMPLS = ("auto", "kernel", "elementwise")
NORM_IMPLS = ("auto", "kernel", "gemv")


@dataclass
class ViTConfig:
    """Everything that defines a ViT's architecture and numerics.

    Attributes:
        image_size: input side in pixels; must be divisible by ``patch_size``.
        patch_size: side of a square patch.
        in_channels: image channels.
        embed_dim: token width.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_dim: hidden width of each block's feed-forward.
        num_classes: classifier outputs.
        drop_rate: dropout after the position embedding, in the feed-forward and before the head.
        attention_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        layer_norm_eps: LayerNorm epsilon (tutorial/MindSpore 1e-7, timm 1e-6, HF 1e-12).
        gelu: "tanh" (MindSpore's nn.GELU default, the tutorial) or "erf" (exact, timm and HF).
        pool: the head's input: "cls" (class token, the tutorial), "mean" (mean of the patch tokens) or "cls_mean"
            (both, concatenated: DINOv2's linear evaluation and transformers' Dinov2ForImageClassification).
        layer_scale: LayerScale's initial value (CaiT, DINOv2): each block's attention and MLP outputs are multiplied
            by a learned per-channel gamma before the residual add. 0: no LayerScale (the tutorial's tree).
        num_register_tokens: learned register tokens (DINOv2 with registers) placed after the class token, after the
            position embedding is added; they have no position and never reach the head.
        patch_impl: "matmul" (patches reshaped and multiplied by the conv kernel: same weights, same result, and
            MindSpore's CPU back-end runs a MatMul far faster than a strided Conv2d) or "conv" (the tutorial's Conv2d).
        gelu_impl: how the GELU runs: "kernel" (MindSpore's nn.GELU), "elementwise" (on CPU the compiled one-pass
            kernels of ms_vit/kernels/gelu_erf.cpp where g++ builds them, else x * sigmoid(2c(x + 0.044715 x^3)) for
            the tanh form, within 1e-6), or "auto" (elementwise on CPU).
        norm_impl: the LayerNorm: "kernel" (MindSpore's LayerNorm and LayerNormGrad), "gemv" (MindSpore's forward,
            the backward written out with every sum a matrix-vector product: faster on CPU, more memory), or "auto"
            (on CPU ms_vit's C++ forward and backward, ms_vit/kernels/layer_norm.cpp, one pass over each row, where
            a compiler builds it, else gemv; the kernel elsewhere). bench/NOTES.md has the measurements.
        token_learner_tokens: S > 0 inserts TokenLearner V1.1 (ms_vit.models.token_learner): the later blocks see the class
            token and S learned tokens instead of every patch token. 0: off.
        token_learner_layer: TokenLearner goes after this many blocks (0: half of num_layers, as seed 002 does).
        token_learner_bottleneck: hidden width of TokenLearner's (and TokenFuser's) scoring MLP.
        token_fuser: after the last block, map the S tokens back onto the patch positions (TokenFuser); needs
            pool "mean", since the class token does not pass through it.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-7
    gelu: str = "tanh"
    pool: str = "cls"
    layer_scale: float = 0.0
    num_register_tokens: int = 0
    patch_impl: str = "matmul"
    gelu_impl: str = "auto"
    norm_impl: str = "auto"
    token_learner_tokens: int = 0
    token_learner_layer: int = 0
    token_learner_bottleneck: int = 64
    token_fuser: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "embed_dim", "num_layers", "num_heads", "mlp_dim",
                     "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model option {name} must be a positive integer, got {value!r}")
        for name in ("drop_rate", "attention_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"model option {name} must be in [0, 1), got {value!r}")
        if not float(self.layer_norm_eps) > 0:
            raise ConfigError(f"model option layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not float(self.layer_scale) >= 0:
            raise ConfigError(f"model option layer_scale must be >= 0 (0: no LayerScale), got {self.layer_scale!r}")
        for name in ("token_learner_tokens", "token_learner_layer", "num_register_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model option {name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.token_learner_tokens and not 1 <= self.learner_after < self.num_layers:
            raise ConfigError(f"token_learner_layer {self.token_learner_layer} must leave at least one block on each "
                              f"side of TokenLearner: 1 .. {self.num_layers - 1} (0: half of num_layers)")
        if self.token_learner_tokens and self.num_register_tokens:
            raise ConfigError("TokenLearner with register tokens: TokenLearner pools the patch tokens, which it finds "
                              "after the class token only; set token_learner_tokens 0 or num_register_tokens 0")
        if self.token_fuser and not self.token_learner_tokens:
            raise ConfigError("token_fuser needs TokenLearner: set token_learner_tokens too")
        if self.token_fuser and self.pool != "mean":
            raise ConfigError("token_fuser with pool 'cls': the fused patch tokens would never reach the classifier; "
                              "set pool 'mean'")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}: "
                              f"use a multiple of {self.patch_size}, e.g. {self.image_size // self.patch_size * self.patch_size or self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"num_heads {self.num_heads} does not divide embed_dim {self.embed_dim}")
        for name, allowed in (("gelu", GELU_FORMS), ("pool", POOLS), ("patch_impl", PATCH_IMPLS),
                              ("gelu_impl", GELU_IMPLS), ("norm_impl", NORM_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model option {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def learner_after(self) -> int:
        """Blocks before TokenLearner (0 when it is off)."""
        if not self.token_learner_tokens:
            return 0
        return self.token_learner_layer or self.num_layers // 2

    @property
    def num_parameters(self) -> int:
        """Parameter count, from the architecture alone (equals the built Cell's)."""
        d, c, p = self.embed_dim, self.in_channels, self.patch_size
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * self.mlp_dim + self.mlp_dim) + (self.mlp_dim * d + d)
        embed = c * p * p * d + d + d + (self.num_patches + 1) * d
        s, b = self.token_learner_tokens, self.token_learner_bottleneck
        scorer = 2 * d + d * b + b + b * s + s
        learner = (scorer if s else 0) + (4 * d + s * s + s + scorer if self.token_fuser else 0)
        block += 2 * d if self.layer_scale else 0
        embed += self.num_register_tokens * d
        return embed + self.num_layers * block + learner + 2 * d + self.head_dim * self.num_classes + self.num_classes

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens

    @property
    def head_dim(self) -> int:
        """Width of the head's input: the token width, twice that for pool "cls_mean"."""
        return self.embed_dim * (2 if self.pool == "cls_mean" else 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _preset(patch: int, dim: int, layers: int, heads: int, mlp: int) -> dict:
    return {"patch_size": patch, "embed_dim": dim, "num_layers": layers, "num_heads": heads, "mlp_dim": mlp}


def _dinov2(dim: int, layers: int, heads: int, registers: int = 0) -> dict:
    """DINOv2 (Oquab et al., 2023): patch 14, LayerScale, exact GELU, eps 1e-6, and the class token with the mean
    patch token as the head's input (its linear evaluation). Trained at 518 px; the presets run at 224, the position
    grid resized when weights load."""
    return {**_preset(14, dim, layers, heads, 4 * dim), "layer_scale": 1e-5, "gelu": "erf", "layer_norm_eps": 1e-6,
            "pool": "cls_mean", "num_register_tokens": registers}


# The sizes of the ViT paper (Table 1) and DeiT (Ti, S); DINOv2's S/B/L with and without 4 registers (giant's SwiGLU
# MLP is not implemented); `vit_tiny_test` is for tests and demos.
PRESETS: dict[str, dict] = {
    "vit_ti_16": _preset(16, 192, 12, 3, 768),
    "vit_s_16": _preset(16, 384, 12, 6, 1536),
    "vit_b_16": _preset(16, 768, 12, 12, 3072),
    "vit_b_32": _preset(32, 768, 12, 12, 3072),
    "vit_l_16": _preset(16, 1024, 24, 16, 4096),
    "vit_l_32": _preset(32, 1024, 24, 16, 4096),
    "dinov2_s14": _dinov2(384, 12, 6),
    "dinov2_b14": _dinov2(768, 12, 12),
    "dinov2_l14": _dinov2(1024, 24, 16),
    "dinov2_s14_reg": _dinov2(384, 12, 6, 4),
    "dinov2_b14_reg": _dinov2(768, 12, 12, 4),
    "dinov2_l14_reg": _dinov2(1024, 24, 16, 4),
    "vit_tiny_test": {**_preset(8, 32, 2, 4, 64), "image_size": 32, "num_classes": 10},
}

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(ViTConfig))


def check_keys(keys, allowed, what: str) -> None:
    """Raise a ConfigError naming the first unknown key and the closest allowed one."""
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; allowed: {', '.join(sorted(allowed))}"
            raise ConfigError(f"unknown {what} {key!r}{hint}")


def model_config(name: str = "vit_b_16", **overrides) -> ViTConfig:
    """The ViTConfig of a preset with keyword overrides (unknown keys are an error naming the key)."""
    if name not in PRESETS:
        check_keys([name], PRESETS, "model name")
    check_keys(overrides, CONFIG_FIELDS, "model option")
    return ViTConfig(**{**PRESETS[name], **overrides})


# ImageNet statistics in 0..255 pixel units (the tutorial's Normalize).
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
