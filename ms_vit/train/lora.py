"""LoRA (Hu et al., 2021) for ms_vit's ViT: low-rank adapters beside chosen Dense layers, merged back for saving.

Each adapted layer computes ``W x + b + (alpha / r) * B A dropout(x)`` with A (r, in) and B (out, r); B starts at zero,
so the adapted model starts as the pretrained one. The layer keeps the original ``weight``/``bias`` Parameters under
their own names (``...qkv.weight``) and adds ``...qkv.lora_a`` / ``...qkv.lora_b``, so a training checkpoint holds
the adapters (exact resume) and ``merged_parameters`` gives plain weights under the tutorial's names.

The mindpet package was not used: its 1.0.4 ``mindpet.delta`` imports ``mindformers`` (the whole LLM suite) at
import time, and its ``LoRADense`` renames the adapted layer's parameters.
"""

from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import HeUniform, initializer

from ms_vit.errors import ConfigError

ADAPTER_SUFFIXES = (".lora_a", ".lora_b")
# lora_targets -> the roles of the Dense layers of each encoder block they name (the model's ``BLOCK_DENSE``).
TARGETS = {"qkv": ("qkv",), "proj": ("proj",), "mlp": ("fc1", "fc2")}
DEFAULT_TARGETS = ("qkv", "proj")


def is_adapter(name: str) -> bool:
    return name.endswith(ADAPTER_SUFFIXES)


class LoRADense(nn.Dense):
    """``nn.Dense`` plus a rank-``rank`` update; built from an existing Dense, sharing its weight and bias."""

    def __init__(self, base: nn.Dense, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__(base.in_channels, base.out_channels, has_bias=base.has_bias)
        self.weight = base.weight
        if base.has_bias:
            self.bias = base.bias
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        # A as nn.Linear's default (Kaiming-uniform), B zero: the update starts at zero.
        self.lora_a = Parameter(initializer(HeUniform(math.sqrt(5)), (rank, base.in_channels)), name="lora_a")
        self.lora_b = Parameter(initializer("zeros", (base.out_channels, rank)), name="lora_b")
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()

    def construct(self, x):
        out = super().construct(x)
        low = ops.matmul(ops.matmul(self.lora_dropout(x), self.lora_a.astype(x.dtype).T),
                         self.lora_b.astype(x.dtype).T)
        return out + low * self.scaling

    def merged_weight(self) -> np.ndarray:
        """W + (alpha / r) B A, the plain Dense weight that gives this layer's output without the adapter."""
        return merge_weight(self.weight.asnumpy(), self.lora_a.asnumpy(), self.lora_b.asnumpy(), self.scaling)


def merge_weight(weight, lora_a, lora_b, scaling: float):
    """W + scaling B A (scaling = alpha / rank): the plain weight equal to a Dense layer with its adapter."""
    return weight + scaling * (lora_b @ lora_a)


def check_options(rank: int, alpha: float, dropout: float, targets) -> tuple:
    """Validate the LoRA options; returns the target names as a tuple."""
    if not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"lora_rank must be a positive integer, got {rank!r}")
    if alpha <= 0:
        raise ConfigError(f"lora_alpha must be positive, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    targets = tuple(targets) or DEFAULT_TARGETS
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ConfigError(f"lora_targets {unknown[0]!r} is not one of {', '.join(TARGETS)} (qkv and proj: the "
                          "attention's projections; mlp: both MLP layers)")
    return targets


def _cell_at(root, path: str):
    cell = root
    for part in path.split("."):
        cell = cell[int(part)] if part.isdigit() else getattr(cell, part)
    return cell


def _set_cell(root, path: str, new) -> None:
    parent_path, _, last = path.rpartition(".")
    parent = _cell_at(root, parent_path) if parent_path else root
    if last.isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)


def add_lora(net, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0, targets=DEFAULT_TARGETS) -> list[str]:
    """Put LoRA adapters on ``targets`` of every encoder block of ``net`` (an ms_vit ViT), in place.

    Returns the adapted layers' paths. Parameter names stay those of the plain model, plus ``.lora_a``/``.lora_b``.
    Call before the network is compiled (before its first run or building a training step).
    """
    targets = check_options(rank, alpha, dropout, targets)
    names = {id(param): param.name for param in net.get_parameters()}
    adapted = []
    for i in range(net.config.num_layers):
        for target in targets:
            for path in net.block_dense_paths(i, TARGETS[target]):
                base = _cell_at(net, path)
                _set_cell(net, path, LoRADense(base, rank, alpha, dropout))
                adapted.append(path)
    # Setting a Cell after construction renames parameters after attribute paths (``cls_token``, ``qkv.weight``):
    # give every existing parameter its own name back, and each adapter its layer's path.
    for param in net.get_parameters():
        if id(param) in names:
            param.name = names[id(param)]
    for path, layer in lora_layers(net).items():
        layer.lora_a.name, layer.lora_b.name = f"{path}.lora_a", f"{path}.lora_b"
    return adapted


def lora_layers(net) -> dict:
    """{path: LoRADense} of ``net``."""
    return {name: cell for name, cell in net.cells_and_names() if isinstance(cell, LoRADense)}


def merged_parameters(net) -> list[dict]:
    """``net``'s parameters with every adapter merged into its layer's weight and the adapters left out: a list of
    {"name", "data"} for ``save_checkpoint``, under the plain model's names."""
    merged = {f"{path}.weight": layer.merged_weight() for path, layer in lora_layers(net).items()}
    out = []
    for param in net.get_parameters():
        if is_adapter(param.name):
            continue
        data = Tensor(merged[param.name]) if param.name in merged else param
        out.append({"name": param.name, "data": data})
    return out
