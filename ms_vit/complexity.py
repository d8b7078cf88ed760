"""Parameters and multiply-accumulates of a ViT, per stage, from its configuration alone."""

from __future__ import annotations

from .config import ViTConfig

# LayerNorm counted as 5 operations per element, as fvcore (and so timm's published 17.58 GMACs for ViT-B/16) does;
# softmax, GELU and residual additions are not counted.
LAYER_NORM_OPS = 5


def stage_table(cfg: ViTConfig) -> list[tuple[str, int, int]]:
    """[(stage, parameters, MACs)] for one image: patch embedding, each block's parts, final norm and head."""
    d, t, h = cfg.embed_dim, cfg.num_patches + 1, cfg.num_heads
    patch_in = cfg.in_channels * cfg.patch_size ** 2
    rows = [("patch embedding", patch_in * d + d, cfg.num_patches * patch_in * d),
            ("class token + positions", d + t * d, 0)]
    attn_params = d * 3 * d + 3 * d + d * d + d
    attn_macs = t * d * 3 * d + 2 * h * t * t * (d // h) + t * d * d
    mlp_params = 2 * d * cfg.mlp_dim + cfg.mlp_dim + d
    mlp_macs = 2 * t * d * cfg.mlp_dim
    norm_macs = LAYER_NORM_OPS * t * d
    layers = cfg.num_layers
    rows += [(f"{layers} x attention (qkv, scores, out)", layers * attn_params, layers * attn_macs),
             (f"{layers} x MLP", layers * mlp_params, layers * mlp_macs),
             (f"{2 * layers} x LayerNorm", layers * 4 * d, layers * 2 * norm_macs),
             ("final LayerNorm", 2 * d, norm_macs),
             ("head", d * cfg.num_classes + cfg.num_classes, d * cfg.num_classes)]
    return rows


def total_macs(cfg: ViTConfig) -> int:
    return sum(macs for _, _, macs in stage_table(cfg))
