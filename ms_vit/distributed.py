"""Data parallelism when launched by msrun: one process per device, gradients averaged; the collectives that keep
the processes in step outside the training step (the resume state, the validation sums)."""

from __future__ import annotations

import os

import numpy as np


def launched_by_msrun() -> bool:
    """Whether this process is one worker of a multi-process msrun launch."""
    return "MS_ROLE" in os.environ and int(os.environ.get("MS_WORKER_NUM", "1")) > 1


def init_data_parallel() -> tuple[int, int]:
    """Join the msrun group when there is one. Returns (rank, world size); (0, 1) for a single process."""
    if not launched_by_msrun():
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()


def shard_indices(num_samples: int, rank: int, world: int) -> np.ndarray:
    """Sample indices rank, rank + world, ...: every sample exactly once over all ranks, none repeated to even out
    the shards (so a sum over the shards counts each sample once; shard sizes differ by at most one)."""
    return np.arange(rank, num_samples, world)


def broadcast(arrays: list, root: int = 0) -> list[np.ndarray]:
    """Every process gets ``root``'s values of ``arrays`` (NumPy arrays or Tensors of the same shapes and dtypes on
    every process; the other processes' values are placeholders). Call it on all processes of the group."""
    from mindspore import Tensor, ops

    # Called outside a compiled graph, so it runs at once (no graph per shape); CPU's Broadcast takes float16/32/64
    # and int32/64, which covers weights, optimizer moments and step counters.
    op = ops.Broadcast(root)
    return [op((value if isinstance(value, Tensor) else Tensor(np.ascontiguousarray(value)),))[0].asnumpy()
            for value in arrays]


def all_reduce_sum(values) -> np.ndarray:
    """The element-wise sum of ``values`` over all processes (float32: CPU's AllReduce takes no float64 or ints;
    exact for counts below 2**24, about 7 significant digits for sums)."""
    from mindspore import Tensor, ops

    total = ops.AllReduce(ops.ReduceOp.SUM)(Tensor(np.asarray(values, np.float32)))
    return total.asnumpy().astype(np.float64)
