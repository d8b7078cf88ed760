"""TokenLearner (Ryoo et al., 2021; the V1.1 module) and TokenFuser: fewer tokens in the later encoder blocks.

TokenLearner V1.1 turns N patch tokens into S learned ones: a LayerNorm and a two-layer MLP (GELU, bottleneck 64)
score every patch for each of the S outputs, a softmax over the patches turns the scores into weights, and each
output token is its weighted sum of the patch tokens. (The first version, seed 002's, scores with four 3x3
convolutions and a sigmoid; V1.1 is the one its authors recommend for training from scratch.)

TokenFuser maps the S tokens back onto the N patch positions after the remaining blocks: the tokens are mixed across
S by a linear layer (between LayerNorms), and each patch position takes a sigmoid-gated combination of them, gated by
an MLP of the patch tokens from before TokenLearner, which are added back as a residual. With it the model's output
has one token per patch again (as dense tasks and attention rollout need); without it, the class token and S tokens.
"""

from __future__ import annotations

from mindspore import nn, ops

from ms_vit.models.layers import LayerNorm, dense_layer, gelu_cell, softmax_fp32


class _ScoreMLP(nn.Cell):
    """LayerNorm, Dense(dim -> bottleneck), GELU, Dense(bottleneck -> tokens): one score per output token."""

    def __init__(self, dim: int, bottleneck: int, tokens: int, eps: float, gelu: str, gelu_impl: str):
        super().__init__()
        self.norm = LayerNorm((dim,), epsilon=eps)
        self.dense1 = dense_layer(dim, bottleneck)
        self.activation = gelu_cell(gelu, gelu_impl)
        self.dense2 = dense_layer(bottleneck, tokens)

    def construct(self, x):
        return self.dense2(self.activation(self.dense1(self.norm(x))))


class TokenLearner(nn.Cell):
    """(B, N, D) patch tokens -> (B, S, D) learned tokens, and the (B, S, N) weights that made them."""

    def __init__(self, dim: int, tokens: int, bottleneck: int = 64, eps: float = 1e-6, gelu: str = "tanh",
                 gelu_impl: str = "auto"):
        super().__init__()
        self.score = _ScoreMLP(dim, bottleneck, tokens, eps, gelu, gelu_impl)

    def construct(self, x):
        weights = softmax_fp32(self.score(x).transpose(0, 2, 1), axis=-1)  # (B, S, N): a distribution over patches
        return ops.BatchMatMul()(weights, x), weights


class TokenFuser(nn.Cell):
    """(B, S, D) tokens and the (B, N, D) patch tokens from before TokenLearner -> (B, N, D)."""

    def __init__(self, dim: int, tokens: int, bottleneck: int = 64, eps: float = 1e-6, gelu: str = "tanh",
                 gelu_impl: str = "auto"):
        super().__init__()
        self.norm1 = LayerNorm((dim,), epsilon=eps)
        self.mix = dense_layer(tokens, tokens)
        self.norm2 = LayerNorm((dim,), epsilon=eps)
        self.gate = _ScoreMLP(dim, bottleneck, tokens, eps, gelu, gelu_impl)

    def construct(self, tokens, original):
        mixed = self.mix(self.norm1(tokens).transpose(0, 2, 1)).transpose(0, 2, 1)  # mixes across the S tokens
        gates = ops.sigmoid(self.gate(original))  # (B, N, S)
        return ops.BatchMatMul()(gates, self.norm2(mixed)) + original
