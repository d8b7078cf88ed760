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


def port_taken(address: str, port: int) -> bool:
    """Whether ``address`` is an address of this host and ``port`` is already listened on there.

    run_finetune.sh asks this before msrun starts on a node other than 0: msrun starts a scheduler on every node
    whose master address is local, and with several "nodes" on one host the later ones cannot bind the port node 0's
    scheduler holds. Asked of the socket layer, not read from MindSpore's logs, so it does not depend on GLOG_v.
    """
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            # Without SO_REUSEADDR a closed connection's TIME_WAIT would count as taken; with it only a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return True
                continue  # EADDRNOTAVAIL: not one of this host's addresses
            return False
    return False


# run_finetune.sh: python ms_vit/distributed.py port_taken ADDRESS PORT (exit 0 if taken), without importing MindSpore.
if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "port_taken":
        sys.exit("usage: python ms_vit/distributed.py port_taken ADDRESS PORT")
    sys.exit(0 if port_taken(sys.argv[2], int(sys.argv[3])) else 1)
