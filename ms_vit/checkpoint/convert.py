"""Pure converters: a flat {name: np.ndarray} in a foreign layout -> the tutorial's names and layouts.

No Cell, no file I/O, no MindSpore: each function can be tested on a dict built in the test.
Formats: "tutorial" (also old mindcv: the same tree under ``backbone.`` with ``head.classifier``), "timm",
"mindcv" (timm's names with MindSpore's gamma/beta), "hf" (transformers' ViT, classic and 5.x names), "npz" (Google),
"hf_dinov2" (transformers' Dinov2Model / Dinov2WithRegistersModel and their classifiers), "timm_dinov2" (timm's
``vit_*_patch14_dinov2`` and ``*_reg4_dinov2``).
"""

from __future__ import annotations

import re

import numpy as np

# (LayerNorm epsilon, GELU form) each source trains with; "mindcv" keeps MindSpore's nn.GELU default (tanh).
SOURCE_NUMERICS = {"tutorial": (1e-7, "tanh"), "timm": (1e-6, "erf"), "mindcv": (1e-6, "tanh"), "hf": (1e-12, "erf"),
                   "npz": (1e-6, "erf"), "hf_dinov2": (1e-6, "erf"), "timm_dinov2": (1e-6, "erf")}


def _block(i, part: str) -> str:
    return f"transformer.layers.{i}.{part}"


_NORM = {"weight": "gamma", "gamma": "gamma", "scale": "gamma", "bias": "beta", "beta": "beta"}

_TIMM_RULES = [
    (r"cls_token", lambda m: "cls"),
    (r"pos_embed", lambda m: "pos_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", lambda m: f"patch_embedding.conv.{m[1]}"),
    (r"blocks\.(\d+)\.norm1\.(\w+)", lambda m: _block(m[1], f"0.cell.0.{_NORM[m[2]]}")),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", lambda m: _block(m[1], f"0.cell.1.qkv.{m[2]}")),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", lambda m: _block(m[1], f"0.cell.1.out.{m[2]}")),
    (r"blocks\.(\d+)\.norm2\.(\w+)", lambda m: _block(m[1], f"1.cell.0.{_NORM[m[2]]}")),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", lambda m: _block(m[1], f"1.cell.1.dense1.{m[2]}")),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", lambda m: _block(m[1], f"1.cell.1.dense2.{m[2]}")),
    (r"blocks\.(\d+)\.ls([12])\.gamma", lambda m: _block(m[1], f"{int(m[2]) - 1}.layer_scale.gamma")),
    (r"reg_token", lambda m: "register_tokens"),
    (r"norm\.(\w+)", lambda m: f"norm.{_NORM[m[1]]}"),
    (r"head(?:\.classifier)?\.(weight|bias)", lambda m: f"dense.{m[1]}"),
]

# The base model's prefix inside transformers' classifiers: ViTForImageClassification, Dinov2ForImageClassification.
_BASE = r"(?:vit\.|dinov2\.|dinov2_with_registers\.)?"
_LAYER = _BASE + r"(?:encoder\.layer|layers)\.(\d+)\."
_HF_RULES = [
    (_BASE + r"embeddings\.cls_token", lambda m: "cls"),
    (_BASE + r"embeddings\.position_embeddings", lambda m: "pos_embedding"),
    (_BASE + r"embeddings\.register_tokens", lambda m: "register_tokens"),
    (_BASE + r"embeddings\.patch_embeddings\.projection\.(weight|bias)", lambda m: f"patch_embedding.conv.{m[1]}"),
    (_LAYER + r"(?:layernorm_before|norm1)\.(weight|bias)", lambda m: _block(m[1], f"0.cell.0.{_NORM[m[2]]}")),
    (_LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", lambda m: _block(m[1], f"0.cell.1.out.{m[2]}")),
    (_LAYER + r"(?:layernorm_after|norm2)\.(weight|bias)", lambda m: _block(m[1], f"1.cell.0.{_NORM[m[2]]}")),
    (_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", lambda m: _block(m[1], f"1.cell.1.dense1.{m[2]}")),
    (_LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", lambda m: _block(m[1], f"1.cell.1.dense2.{m[2]}")),
    (_LAYER + r"layer_scale([12])\.lambda1", lambda m: _block(m[1], f"{int(m[2]) - 1}.layer_scale.gamma")),
    (_BASE + r"layernorm\.(weight|bias)", lambda m: f"norm.{_NORM[m[1]]}"),
    (r"classifier\.(weight|bias)", lambda m: f"dense.{m[1]}"),
]
_HF_QKV = re.compile(_LAYER + r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$")


def detect_format(params: dict) -> str:
    """Which layout a flat dict is in, from its names."""
    names = set(params)
    if any(n.endswith("pos_embedding") and "/" not in n for n in names):
        return "tutorial"
    if "Transformer/posembed_input/pos_embedding" in names:
        return "npz"
    if any(n.endswith("embeddings.cls_token") for n in names):
        return "hf_dinov2" if any(n.endswith(("layer_scale1.lambda1", "embeddings.mask_token")) for n in names) else "hf"
    if "pos_embed" in names and "blocks.0.attn.qkv.weight" in names:
        if "blocks.0.ls1.gamma" in names:
            return "timm_dinov2"
        return "mindcv" if "blocks.0.norm1.gamma" in names else "timm"
    return "unknown"


def pos_antialias(fmt: str, params: dict) -> bool:
    """Whether the source resizes its position grid with torch's antialiased bicubic: timm does (resample_abs_pos_embed),
    and so does transformers' Dinov2WithRegisters; transformers' Dinov2 and every other source use plain bicubic."""
    return fmt == "timm_dinov2" or (fmt == "hf_dinov2" and any(n.endswith("register_tokens") for n in params))


def _rename(params: dict, rules) -> tuple[dict, list]:
    out, ignored = {}, []
    for name, value in params.items():
        for pattern, target in rules:
            match = re.fullmatch(pattern, name)
            if match:
                out[target(match)] = value
                break
        else:
            ignored.append(name)
    return out, ignored


def from_tutorial(params: dict) -> tuple[dict, list]:
    """The tutorial's names; old mindcv's ``backbone.`` tree keeps its head as ``head.classifier``/``head.dense``."""
    out = {}
    for name, value in params.items():
        match = re.fullmatch(r"head\.(?:classifier|dense)\.(weight|bias)", name)
        out[f"dense.{match[1]}" if match and "dense.weight" not in params else name] = value
    return out, []


def from_timm(params: dict) -> tuple[dict, list]:
    """timm's VisionTransformer (and mindcv's timm-style ViT): same layouts, other names.

    timm's DINOv2 with registers has no class position (``no_embed_class``: its class token already holds it), so
    its positions gain a zero class entry: the same sums, in the tree every other source uses."""
    out, ignored = _rename(params, _TIMM_RULES)
    pos = out.get("pos_embedding")
    if "register_tokens" in out and pos is not None and round(np.sqrt(pos.shape[1])) ** 2 == pos.shape[1]:
        out["pos_embedding"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    return out, ignored


def from_hf(params: dict) -> tuple[dict, list]:
    """transformers' ViT: query, key and value projections concatenated into the fused qkv, in that order."""
    qkv: dict = {}
    rest = {}
    for name, value in params.items():
        match = _HF_QKV.match(name)
        if match:
            qkv.setdefault((int(match[1]), match[3]), {})[match[2][0]] = value  # "q", "k" or "v"
        else:
            rest[name] = value
    out, ignored = _rename(rest, _HF_RULES)
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} has only {sorted(parts)} of query/key/value {kind}")
        out[_block(layer, f"0.cell.1.qkv.{kind}")] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out, ignored


def from_npz(params: dict) -> tuple[dict, list]:
    """Google's vision_transformer .npz: HWIO conv kernel, (in, out) dense kernels, per-head attention kernels."""
    out, ignored = {}, []
    p = {re.sub(r"^(params|opt/target)/", "", k): v for k, v in params.items()}
    out["cls"] = p.pop("cls")
    out["pos_embedding"] = p.pop("Transformer/posembed_input/pos_embedding")
    out["patch_embedding.conv.weight"] = np.transpose(p.pop("embedding/kernel"), (3, 2, 0, 1))
    out["patch_embedding.conv.bias"] = p.pop("embedding/bias")
    out["norm.gamma"], out["norm.beta"] = p.pop("Transformer/encoder_norm/scale"), p.pop("Transformer/encoder_norm/bias")
    if "head/kernel" in p:
        out["dense.weight"], out["dense.bias"] = p.pop("head/kernel").T, p.pop("head/bias")
    layers = sorted({int(m[1]) for k in p for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m})
    for i in layers:
        b = f"Transformer/encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_1/"
        dim = p[a + "query/kernel"].shape[0]
        out[_block(i, "0.cell.0.gamma")], out[_block(i, "0.cell.0.beta")] = p.pop(b + "LayerNorm_0/scale"), \
            p.pop(b + "LayerNorm_0/bias")
        out[_block(i, "0.cell.1.qkv.weight")] = np.concatenate(
            [p.pop(a + f"{n}/kernel").reshape(dim, -1).T for n in ("query", "key", "value")], axis=0)
        out[_block(i, "0.cell.1.qkv.bias")] = np.concatenate(
            [p.pop(a + f"{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        kernel = p.pop(a + "out/kernel")  # (heads, head_dim, dim)
        out[_block(i, "0.cell.1.out.weight")] = kernel.reshape(-1, kernel.shape[-1]).T
        out[_block(i, "0.cell.1.out.bias")] = p.pop(a + "out/bias")
        out[_block(i, "1.cell.0.gamma")], out[_block(i, "1.cell.0.beta")] = p.pop(b + "LayerNorm_2/scale"), \
            p.pop(b + "LayerNorm_2/bias")
        for src, dst in (("Dense_0", "dense1"), ("Dense_1", "dense2")):
            out[_block(i, f"1.cell.1.{dst}.weight")] = p.pop(b + f"MlpBlock_3/{src}/kernel").T
            out[_block(i, f"1.cell.1.{dst}.bias")] = p.pop(b + f"MlpBlock_3/{src}/bias")
    ignored.extend(sorted(p))  # e.g. pre_logits: dropped when fine-tuning, as vit_jax does
    return {k: np.ascontiguousarray(v) for k, v in out.items()}, ignored


CONVERTERS = {"tutorial": from_tutorial, "timm": from_timm, "mindcv": from_timm, "hf": from_hf, "npz": from_npz,
              "hf_dinov2": from_hf, "timm_dinov2": from_timm}


def npz_num_heads(params: dict) -> int | None:
    kernel = params.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    return int(kernel.shape[1]) if kernel is not None else None
