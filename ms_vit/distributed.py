"""Data parallelism when launched by msrun: one process per device, gradients averaged."""

from __future__ import annotations

import os


def launched_by_msrun() -> bool:
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
