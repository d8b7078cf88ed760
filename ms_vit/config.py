"""Model configuration: one dataclass, the size presets, and override checking.

Field names follow the MindSpore ViT tutorial's constructor (``patch_size``, ``embed_dim``, ``num_layers``,
``num_heads``, ``mlp_dim``); the numeric defaults are the tutorial's too (``nn.LayerNorm`` epsilon 1e-7,
``nn.GELU`` tanh approximation), so ``vit_b_16`` reproduces the tutorial's network exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from .errors import ConfigError

GELU_FORMS = ("tanh", "erf")
POOLS = ("cls", "mean")
PATCH_IMPLS = ("matmul", "conv")


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
        pool: "cls" (class token, the tutorial) or "mean" (mean of the patch tokens).
        patch_impl: "matmul" (patches reshaped and multiplied by the conv kernel: same weights, same result,
            ~20x faster on CPU) or "conv" (the tutorial's Conv2d).
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
    patch_impl: str = "matmul"

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
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}: "
                              f"use a multiple of {self.patch_size}, e.g. {self.image_size // self.patch_size * self.patch_size or self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"num_heads {self.num_heads} does not divide embed_dim {self.embed_dim}")
        for name, allowed in (("gelu", GELU_FORMS), ("pool", POOLS), ("patch_impl", PATCH_IMPLS)):
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
    def num_parameters(self) -> int:
        """Parameter count, from the architecture alone (equals the built Cell's)."""
        d, c, p = self.embed_dim, self.in_channels, self.patch_size
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * self.mlp_dim + self.mlp_dim) + (self.mlp_dim * d + d)
        embed = c * p * p * d + d + d + (self.num_patches + 1) * d
        return embed + self.num_layers * block + 2 * d + d * self.num_classes + self.num_classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _preset(patch: int, dim: int, layers: int, heads: int, mlp: int) -> dict:
    return {"patch_size": patch, "embed_dim": dim, "num_layers": layers, "num_heads": heads, "mlp_dim": mlp}


# The sizes of the ViT paper (Table 1) and DeiT (Ti, S); `vit_tiny_test` is for tests and demos.
PRESETS: dict[str, dict] = {
    "vit_ti_16": _preset(16, 192, 12, 3, 768),
    "vit_s_16": _preset(16, 384, 12, 6, 1536),
    "vit_b_16": _preset(16, 768, 12, 12, 3072),
    "vit_b_32": _preset(32, 768, 12, 12, 3072),
    "vit_l_16": _preset(16, 1024, 24, 16, 4096),
    "vit_l_32": _preset(32, 1024, 24, 16, 4096),
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
