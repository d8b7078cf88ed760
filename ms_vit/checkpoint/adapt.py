"""Pure steps on flat {name: np.ndarray} dicts: no Cell, no file I/O."""

from __future__ import annotations

import re

import numpy as np

# Prefixes that training wrappers put in front of the network's names (Model's train network, mindvision's
# BaseClassifier, MindSpore's WithLossCell).
WRAPPER_PREFIXES = ("network.", "backbone.", "_backbone.")

# Optimizer and training-loop state that `Model` writes beside the weights.
_OPTIMIZER_STATE = re.compile(
    r"^(moment1|moment2|moments|accum|mean_grad|mean_square|adam_m|adam_v|exp_avg|exp_avg_sq)\."
    r"|^(beta1_power|beta2_power|learning_rate\w*|global_step|scale_sense|current_iterator_step|"
    r"last_overflow_iterator_step|epoch_num|step_num|loss_scale|momentum|weight_decay)$")


def strip_prefixes(params: dict, expected: set) -> tuple[dict, str]:
    """Remove one wrapper prefix when the names carry it (and the net's names do not). Returns (params, prefix)."""
    if set(params) & expected:
        return params, ""
    for prefix in WRAPPER_PREFIXES:
        if any(name.startswith(prefix) for name in params):
            renamed = {(name[len(prefix):] if name.startswith(prefix) else name): value
                       for name, value in params.items()}
            if set(renamed) & expected:
                return renamed, prefix
    return params, ""


def split_optimizer_state(params: dict) -> tuple[dict, list]:
    """Separate model weights from optimizer/loop state. Returns (weights, sorted names of the state)."""
    state = sorted(name for name in params if _OPTIMIZER_STATE.search(name))
    return {k: v for k, v in params.items() if k not in set(state)}, state


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (-0.75: torch's bicubic; -0.5: PIL's and torch's
    antialiased bicubic)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def resize_matrix(n_in: int, n_out: int, antialias: bool = False) -> np.ndarray:
    """The (n_out, n_in) matrix of torch's ``interpolate(mode="bicubic", align_corners=False)`` along one axis.

    Without ``antialias``: a = -0.75 at half-pixel centres, edge indices clamped. With it (torch's and PIL's
    antialiased path, which timm and DINOv2-with-registers resize positions with): a = -0.5, the kernel stretched by
    the downscale factor and each row normalised.
    """
    scale = n_in / n_out
    matrix = np.zeros((n_out, n_in))
    if antialias:
        stretch = max(scale, 1.0)
        for o in range(n_out):
            centre = scale * (o + 0.5)
            lo, hi = max(int(centre - 2 * stretch + 0.5), 0), min(int(centre + 2 * stretch + 0.5), n_in)
            weights = _cubic((np.arange(lo, hi) - centre + 0.5) / stretch, -0.5)
            matrix[o, lo:hi] = weights / weights.sum()
        return matrix
    for o in range(n_out):
        source = (o + 0.5) * scale - 0.5
        first = int(np.floor(source))
        for k in range(-1, 3):
            matrix[o, min(max(first + k, 0), n_in - 1)] += _cubic(np.float64(source - first - k), -0.75)
    return matrix


def resize_pos_embed(pos: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int = 1,
                     antialias: bool = False) -> np.ndarray:
    """Resize a (1, prefix + H*W, D) position embedding to another patch grid, bicubically, prefix tokens kept.

    The arithmetic is torch's ``interpolate(mode="bicubic", align_corners=False, antialias=antialias)`` in float64
    (``resize_matrix``), so positions match those the source model computes. The old grid must be square; resizing
    to the same grid returns the input unchanged.
    """
    prefix, grid_tokens = pos[:, :num_prefix_tokens], pos[0, num_prefix_tokens:]
    old = int(round(np.sqrt(grid_tokens.shape[0])))
    if old * old != grid_tokens.shape[0]:
        raise ValueError(f"position embedding has {grid_tokens.shape[0]} patch tokens, not a square grid")
    if (old, old) == tuple(new_grid):
        return pos
    dim = grid_tokens.shape[-1]
    grid = grid_tokens.reshape(old, old, dim).astype(np.float64)
    rows, cols = resize_matrix(old, new_grid[0], antialias), resize_matrix(old, new_grid[1], antialias)
    resized = np.einsum("oi,ijd,pj->opd", rows, grid, cols)
    return np.concatenate([prefix, resized.reshape(1, -1, dim).astype(pos.dtype)], axis=1)
