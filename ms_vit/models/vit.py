"""The Vision Transformer as MindSpore Cells, blocks first, then the ViT.

Parameter names are those the MindSpore ViT tutorial's network writes with ``ms.save_checkpoint``
(``cls``, ``pos_embedding``, ``patch_embedding.conv.*``, ``transformer.layers.{i}.{0|1}.cell.{0|1}.*``,
``norm.*``, ``dense.*``), so its ``vit_b_16_224.ckpt`` loads without renaming. What the tutorial lacks adds names
of its own only where a config turns it on: LayerScale (``transformer.layers.{i}.{0|1}.layer_scale.gamma``) and
register tokens (``register_tokens``), so DINOv2 weights load into the same tree.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import TruncatedNormal, Zero, initializer

from ms_vit.config import ViTConfig
from ms_vit.models.layers import Dense, LayerNorm, SigmoidGELU, dense_layer, gelu_cell, softmax_cell, softmax_fp32  # noqa: F401 (re-exported)
from ms_vit.models.token_learner import TokenFuser, TokenLearner

HEAD_PARAMS = ("dense.weight", "dense.bias")
HEAD_PREFIX = "dense."
POS_EMBED_PARAM = "pos_embedding"
REGISTER_PARAM = "register_tokens"
PATCH_EMBED_PREFIX = "patch_embedding."
# Tokens added to the patches: no weight decay (ms_vit.train.optim), frozen with the patch embedding (ms_vit.train.modes).
EMBEDDING_PARAMS = ("cls", POS_EMBED_PARAM, REGISTER_PARAM)
BLOCKS_PATH = "transformer.layers"
# The Dense layers of every encoder block, by role, as paths below the block (ms_vit.train.lora adapts them by role).
BLOCK_DENSE = {"qkv": "0.cell.1.qkv", "proj": "0.cell.1.out", "fc1": "1.cell.1.dense1", "fc2": "1.cell.1.dense2"}
# Parameter-name endings that never take weight decay: biases, LayerNorm's gamma and beta, LayerScale's gamma.
NO_DECAY_SUFFIXES = (".bias", ".beta", ".gamma")

_BLOCK_NAME = re.compile(rf"{re.escape(BLOCKS_PATH)}\.(\d+)\.")


class ParamGroup(NamedTuple):
    """Where a parameter sits in the ViT, for everything that treats parts of the model differently (layer-wise LR
    decay, frozen and linear fine-tuning, LoRA).

    ``kind`` is one of:

    * ``"embedding"``: the patch embedding, class token, position embedding and register tokens;
    * ``"block"``: encoder block ``block`` (its LayerNorms, attention, MLP, LayerScale and any LoRA adapters);
    * ``"head"``: the classifier (``dense.*``);
    * ``"other"``: the final LayerNorm and what sits in the encoder outside the blocks (TokenLearner, TokenFuser).
      They belong to no block, so layer decay gives them the head's rate and frozen mode never freezes them.
    """

    kind: str
    block: int | None = None


EMBEDDING = ParamGroup("embedding")
HEAD = ParamGroup("head")
OTHER = ParamGroup("other")


def block_index(name: str) -> int | None:
    """The encoder block a parameter belongs to (``transformer.layers.{i}.*``, LoRA adapters included), else None."""
    match = _BLOCK_NAME.match(name)
    return int(match.group(1)) if match else None


def is_head(name: str) -> bool:
    """True for the classifier's parameters (``dense.weight``, ``dense.bias``)."""
    return name.startswith(HEAD_PREFIX)


def is_embedding(name: str) -> bool:
    """True for what turns the image into tokens: the patch embedding, class token, positions and registers."""
    return name in EMBEDDING_PARAMS or name.startswith(PATCH_EMBED_PREFIX)


def param_group(name: str) -> ParamGroup:
    """The ``ParamGroup`` of a parameter name of ms_vit's ViT (see ``ViT.group_of``)."""
    if is_embedding(name):
        return EMBEDDING
    block = block_index(name)
    if block is not None:
        return ParamGroup("block", block)
    return HEAD if is_head(name) else OTHER


def no_weight_decay(name: str) -> bool:
    """True where weight decay does not apply: biases, LayerNorm and LayerScale parameters, the class token,
    position embedding and register tokens. Weight matrices and kernels (LoRA's A and B too) decay."""
    return name.endswith(NO_DECAY_SUFFIXES) or name in EMBEDDING_PARAMS


def layer_id(name: str, num_layers: int) -> int:
    """The layer-decay depth of a parameter: 0 for the embeddings, i + 1 for encoder block i, ``num_layers + 1``
    for everything above or beside the blocks (final norm, TokenLearner/TokenFuser, head), as BEiT and MAE count."""
    group = param_group(name)
    if group.kind == "embedding":
        return 0
    if group.kind == "block":
        return group.block + 1
    return num_layers + 1


class DropPath(nn.Cell):
    """Stochastic depth: drops a sample's whole residual branch with probability ``rate`` while training."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = float(rate)
        self.dropout = nn.Dropout(p=self.rate) if self.rate > 0 else None

    def construct(self, x):
        if self.dropout is None or not self.training:
            return x
        # Dropout on a (B, 1, 1) tensor of ones gives the per-sample keep mask, already scaled by 1 / keep.
        mask = self.dropout(ops.ones((x.shape[0], 1, 1), x.dtype))
        return x * mask


class PatchEmbedding(nn.Cell):
    """Cuts the image into non-overlapping patches and projects each one to ``embed_dim``.

    The weights are those of a ``Conv2d`` with kernel = stride = patch size (the tutorial's layer). With
    ``impl="matmul"`` the same arithmetic runs as reshape + MatMul with the conv's own kernel, which
    MindSpore's CPU back-end runs far faster than its strided conv (bench/NOTES.md).
    """

    def __init__(self, *, image_size: int, patch_size: int, embed_dim: int, in_channels: int, impl: str = "matmul"):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.embed_dim = embed_dim
        self.use_matmul = impl == "matmul"
        self.conv = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, has_bias=True,
                              pad_mode="valid")
        # An attribute, not ops.matmul: AMP bf16 (ms_vit.train.amp) swaps the GEMMs held as attributes.
        self.project = ops.MatMul(transpose_b=True)

    def construct(self, x):
        if self.use_matmul:
            b, c, h, w = x.shape
            p = self.patch_size
            gh = h // p
            gw = w // p
            x = ops.reshape(x, (b, c, gh, p, gw, p))
            x = ops.transpose(x, (0, 2, 4, 1, 3, 5))  # (b, gh, gw, c, p, p): the conv kernel's (c, kh, kw) order
            x = ops.reshape(x, (b * gh * gw, c * p * p))
            kernel = ops.reshape(self.conv.weight.astype(x.dtype), (self.embed_dim, c * p * p))
            x = self.project(x, kernel) + self.conv.bias.astype(x.dtype)
            return ops.reshape(x, (b, gh * gw, self.embed_dim))
        x = self.conv(x)
        b, c, h, w = x.shape
        return ops.transpose(ops.reshape(x, (b, c, h * w)), (0, 2, 1))


class Attention(nn.Cell):
    """Multi-head self-attention with one fused qkv projection. Returns the output and the attention map."""

    def __init__(self, *, dim: int, num_heads: int, drop_rate: float = 0.0, attention_drop_rate: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = dense_layer(dim, dim * 3)
        self.scores = ops.BatchMatMul(transpose_b=True)  # q.k^T without a transposed copy of k
        self.context = ops.BatchMatMul()  # attn.v; an attribute so that AMP bf16 can swap it, as scores
        self.softmax = softmax_cell()
        self.onnx_export = False  # a graph constant: export.py sets it before ms.export(..., "ONNX")
        self.attn_drop = nn.Dropout(p=attention_drop_rate)
        self.out = dense_layer(dim, dim)
        self.out_drop = nn.Dropout(p=drop_rate)
        self.fused = False  # a graph constant: AMP bf16's one-call attention (ms_vit.kernels.bf16_attention_op)

    def use_bf16(self) -> bool:
        """Under AMP bf16: the scores, softmax and context in one kernel call, unless attention dropout is on (the
        kernel has none). Its batched matmuls are still swapped by the caller: False."""
        if self.attn_drop.p == 0:
            from ms_vit.kernels.bf16 import bf16_attention_op

            self.fused_attention = bf16_attention_op(self.num_heads)
            self.fused = True
        return False

    def construct(self, x):
        if self.fused and not self.onnx_export:  # constants
            context, attn = self.fused_attention(self.qkv(x))
            return self.out_drop(self.out(context)), attn
        b, n, c = x.shape
        qkv = ops.reshape(self.qkv(x), (b, n, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        if self.onnx_export:  # MindSpore cannot export Unstack to ONNX; slices give the same values, 1.5x slower
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = ops.unstack(qkv, axis=0)
        # q is scaled before the product: under AMP O2 an unscaled fp16 q.k^T overflows (> 65504) sooner.
        scores = self.scores(q * self.scale, k)
        attn = self.softmax(scores)
        out = self.context(self.attn_drop(attn), v)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (b, n, c))
        return self.out_drop(self.out(out)), attn


class FeedForward(nn.Cell):
    """Dense, GELU, Dense, each output with dropout."""

    def __init__(self, *, dim: int, hidden_dim: int, gelu: str = "tanh", drop_rate: float = 0.0,
                 gelu_impl: str = "auto"):
        super().__init__()
        self.dense1 = dense_layer(dim, hidden_dim)
        self.gelu = gelu
        self.activation = gelu_cell(gelu, gelu_impl)
        self.dense2 = dense_layer(hidden_dim, dim)
        self.dropout = nn.Dropout(p=drop_rate)
        self.gelu_in_dense1 = False  # a graph constant: AMP bf16 runs the GELU inside dense1's GEMM at inference

    def use_bf16(self) -> bool:
        """Under AMP bf16: the GELU joins dense1's kernel call at inference (training keeps it separate, for its
        gradient). Only ms_vit's own Dense (not a LoRA-adapted one) can take it. Replaces no GEMM: False."""
        if isinstance(self.dense1, Dense) and self.gelu in ("tanh", "erf"):
            self.dense1.fuse_activation(f"gelu_{self.gelu}")
            self.gelu_in_dense1 = True
        return False

    def construct(self, x):
        x = self.dense1(x)
        if not self.gelu_in_dense1 or self.training:  # constants
            x = self.activation(x)
        x = self.dropout(x)
        return self.dropout(self.dense2(x))


class LayerScale(nn.Cell):
    """A learned per-channel scale of a residual branch (Touvron et al., CaiT; DINOv2), initialised to ``init``."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = Parameter(initializer(float(init), (dim,), ms.float32), name="gamma")

    def construct(self, x):
        return x * self.gamma.astype(x.dtype)


class PreNorm(nn.Cell):
    """LayerNorm then a sub-layer; held as ``cell.0`` / ``cell.1``, the tutorial's parameter paths. ``layer_scale`` is the
    branch's LayerScale when the model has one (``layer_scale.gamma``), else the identity (no parameter)."""

    def __init__(self, norm: nn.Cell, fn: nn.Cell, layer_scale: float = 0.0, dim: int = 0):
        super().__init__()
        self.cell = nn.CellList([norm, fn])
        self.layer_scale = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()

    def construct(self, x):
        return self.cell[1](self.cell[0](x))


class TransformerEncoder(nn.Cell):
    """Pre-norm encoder blocks, with TokenLearner (and TokenFuser) when the config asks.

    ``construct`` returns the tokens and a tuple with each block's attention map; after TokenLearner the maps are
    over the class token and the learned tokens."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        layers = []
        drop_paths = []
        for i in range(cfg.num_layers):
            attention = Attention(dim=cfg.embed_dim, num_heads=cfg.num_heads, drop_rate=cfg.drop_rate,
                                  attention_drop_rate=cfg.attention_drop_rate)
            feedforward = FeedForward(dim=cfg.embed_dim, hidden_dim=cfg.mlp_dim, gelu=cfg.gelu, drop_rate=cfg.drop_rate,
                                      gelu_impl=cfg.gelu_impl)
            scale = dict(layer_scale=cfg.layer_scale, dim=cfg.embed_dim)
            layers.append(nn.CellList([
                PreNorm(LayerNorm((cfg.embed_dim,), epsilon=cfg.layer_norm_eps, impl=cfg.norm_impl), attention, **scale),
                PreNorm(LayerNorm((cfg.embed_dim,), epsilon=cfg.layer_norm_eps, impl=cfg.norm_impl), feedforward,
                        **scale),
            ]))
            rate = cfg.drop_path_rate * i / max(cfg.num_layers - 1, 1)
            drop_paths.append(DropPath(rate))
        self.layers = nn.CellList(layers)
        self.drop_paths = nn.CellList(drop_paths)  # no parameters: the tutorial's names are unaffected
        self.learner_after = cfg.learner_after
        self.frozen_blocks = 0  # frozen fine-tuning (ms_vit.train.modes): no gradient flows below this many blocks
        self.token_learner = self.token_fuser = None
        if cfg.token_learner_tokens:
            options = dict(dim=cfg.embed_dim, tokens=cfg.token_learner_tokens, bottleneck=cfg.token_learner_bottleneck,
                           eps=cfg.layer_norm_eps, gelu=cfg.gelu, gelu_impl=cfg.gelu_impl)
            self.token_learner = TokenLearner(**options)
            if cfg.token_fuser:
                self.token_fuser = TokenFuser(**options)

    def construct(self, x):
        attentions = ()
        patches = x
        done = 0
        for layer, drop_path in zip(self.layers, self.drop_paths):
            out, attn = layer[0](x)
            x = x + drop_path(layer[0].layer_scale(out))
            x = x + drop_path(layer[1].layer_scale(layer[1](x)))
            attentions = attentions + (attn,)
            done = done + 1
            if done == self.frozen_blocks:  # a constant too: the backward pass ends at the last frozen block
                x = ops.stop_gradient(x)
            if done == self.learner_after:  # a constant: graph mode keeps only the taken branch
                patches = x[:, 1:]
                learned, _ = self.token_learner(patches)
                x = ops.concat((x[:, :1], learned), axis=1)
        if self.token_fuser is not None:
            x = ops.concat((x[:, :1], self.token_fuser(x[:, 1:], patches)), axis=1)
        return x, attentions


class ViT(nn.Cell):
    """Vision Transformer classifier (Dosovitskiy et al., 2021) with the MindSpore tutorial's parameter tree.

    ``construct(images)`` returns logits. ``forward_features`` returns the normalised tokens and the per-layer
    attention maps, ``forward_head`` turns tokens into logits; the wrappers ``FeatureExtractor`` and
    ``AttentionOutput`` expose them as graph-compilable Cells that share this model's parameters.
    Build one with ``ms_vit.create_model``.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        self.pool = cfg.pool
        self.patch_embedding = PatchEmbedding(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                              embed_dim=cfg.embed_dim, in_channels=cfg.in_channels,
                                              impl=cfg.patch_impl)
        self.cls_token = Parameter(initializer(TruncatedNormal(0.02), (1, 1, cfg.embed_dim), ms.float32), name="cls")
        self.pos_embedding = Parameter(
            initializer(TruncatedNormal(0.02), (1, cfg.num_patches + 1, cfg.embed_dim), ms.float32),
            name=POS_EMBED_PARAM)
        self.num_registers = cfg.num_register_tokens
        self.num_prefix = cfg.num_prefix_tokens
        if self.num_registers:
            # Zeros, as transformers initialises them; they have no position, as in DINOv2.
            self.register_tokens = Parameter(initializer(Zero(), (1, self.num_registers, cfg.embed_dim), ms.float32),
                                             name=REGISTER_PARAM)
        self.pos_dropout = nn.Dropout(p=cfg.drop_rate)
        self.transformer = TransformerEncoder(cfg)
        self.norm = LayerNorm((cfg.embed_dim,), epsilon=cfg.layer_norm_eps, impl=cfg.norm_impl)
        self.dropout = nn.Dropout(p=cfg.drop_rate)
        self.dense = dense_layer(cfg.head_dim, cfg.num_classes)

    def forward_features(self, x):
        """Images (B, C, H, W) -> (normalised tokens (B, 1 + registers + patches, D), tuple of (B, heads, T, T) maps).

        The tokens are in the order of transformers' ``last_hidden_state``: class token, registers, patches."""
        x = self.patch_embedding(x)
        cls_tokens = ops.tile(self.cls_token.astype(x.dtype), (x.shape[0], 1, 1))
        x = ops.concat((cls_tokens, x), axis=1) + self.pos_embedding.astype(x.dtype)
        if self.num_registers:  # a constant: graph mode compiles one branch
            registers = ops.tile(self.register_tokens.astype(x.dtype), (x.shape[0], 1, 1))
            x = ops.concat((x[:, :1], registers, x[:, 1:]), axis=1)
        x, attentions = self.transformer(self.pos_dropout(x))
        return self.norm(x), attentions

    def pool_tokens(self, x):
        """Tokens -> pre-logits features: the class token (B, D), the mean of the patch tokens (B, D), or both
        concatenated (B, 2D) for pool "cls_mean". Registers are never pooled."""
        if self.pool == "mean":
            return x[:, self.num_prefix:].mean(axis=1)
        if self.pool == "cls_mean":
            return ops.concat((x[:, 0], x[:, self.num_prefix:].mean(axis=1)), axis=-1)
        return x[:, 0]

    def forward_head(self, x):
        return self.dense(self.dropout(self.pool_tokens(x)))

    def construct(self, x):
        x, _ = self.forward_features(x)
        return self.forward_head(x)

    def group_of(self, name: str) -> ParamGroup:
        """The ``ParamGroup`` of one of this model's parameter names (timm's ``group_matcher``, per name)."""
        return param_group(name)

    def no_weight_decay(self, name: str) -> bool:
        """True where the optimizer must not apply weight decay to this parameter (see ``no_weight_decay``)."""
        return no_weight_decay(name)

    def layer_id(self, name: str) -> int:
        """0 for the embeddings, i + 1 for encoder block i, ``num_layers + 1`` for the final norm, TokenLearner and
        TokenFuser and the head: the depth that layer-wise LR decay scales by."""
        return layer_id(name, self.config.num_layers)

    def block_paths(self) -> list[str]:
        """The cell path of every encoder block, in order (``transformer.layers.{i}``)."""
        return [f"{BLOCKS_PATH}.{i}" for i in range(len(self.transformer.layers))]

    def block_dense_paths(self, block: int, roles) -> list[str]:
        """Cell paths of the Dense layers of encoder block ``block`` with the given roles (keys of ``BLOCK_DENSE``:
        qkv, proj, fc1, fc2), in the order given."""
        base = self.block_paths()[block]
        return [f"{base}.{BLOCK_DENSE[role]}" for role in roles]

    def init_head(self) -> None:
        """Re-initialise the classifier (truncated normal 0.02, zero bias), as for a new set of classes."""
        self.dense.weight.set_data(initializer(TruncatedNormal(0.02), self.dense.weight.shape, ms.float32))
        self.dense.bias.set_data(initializer(Zero(), self.dense.bias.shape, ms.float32))


class FeatureExtractor(nn.Cell):
    """Pre-logits features (B, D) of a ViT, sharing its parameters."""

    def __init__(self, vit: ViT):
        super().__init__(auto_prefix=False)
        self.vit = vit

    def construct(self, x):
        tokens, _ = self.vit.forward_features(x)
        return self.vit.pool_tokens(tokens)


class AttentionOutput(nn.Cell):
    """Logits and attention maps stacked as (layers, B, heads, T, T), sharing the ViT's parameters.

    With TokenLearner only the blocks before it are stacked: theirs are the maps over the image's patches."""

    def __init__(self, vit: ViT):
        super().__init__(auto_prefix=False)
        self.vit = vit
        self.stacked = vit.config.learner_after or vit.config.num_layers

    def construct(self, x):
        tokens, attentions = self.vit.forward_features(x)
        return self.vit.forward_head(tokens), ops.stack(attentions[:self.stacked], axis=0)
