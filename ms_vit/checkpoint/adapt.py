"""Pure steps on flat {name: np.ndarray} dicts: no Cell, no file I/O."""

from __future__ import annotations

import re

import cv2
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


def resize_pos_embed(pos: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> np.ndarray:
    """Resize a (1, prefix + H*W, D) position embedding to another patch grid, bicubically, prefix tokens kept.

    The old grid is taken as square. Resizing to the same grid returns the input unchanged.
    """
    prefix, grid_tokens = pos[:, :num_prefix_tokens], pos[0, num_prefix_tokens:]
    old = int(round(np.sqrt(grid_tokens.shape[0])))
    if old * old != grid_tokens.shape[0]:
        raise ValueError(f"position embedding has {grid_tokens.shape[0]} patch tokens, not a square grid")
    if (old, old) == tuple(new_grid):
        return pos
    dim = grid_tokens.shape[-1]
    grid = grid_tokens.reshape(old, old, dim).astype(np.float32)
    # OpenCV resizes at most 512 channels at a time; INTER_CUBIC is the a=-0.75 kernel of torch's bicubic.
    chunks = [cv2.resize(grid[:, :, i:i + 512], (new_grid[1], new_grid[0]), interpolation=cv2.INTER_CUBIC)
              for i in range(0, dim, 512)]
    resized = np.concatenate([c.reshape(new_grid[0], new_grid[1], -1) for c in chunks], axis=-1)
    return np.concatenate([prefix, resized.reshape(1, -1, dim).astype(pos.dtype)], axis=1)
