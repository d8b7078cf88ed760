"""Forward timing and GRAPH/PYNATIVE comparison of a built net (used by scripts and benchmarks)."""

from __future__ import annotations

import statistics
import time

import numpy as np


def random_images(net, batch: int, seed: int = 0) -> np.ndarray:
    cfg = net.config
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, cfg.in_channels, cfg.image_size, cfg.image_size)).astype(np.float32)


def time_forward(net, batch: int, repeat: int = 3) -> dict:
    """Seconds for a forward in the current mode: the first call (with compilation) and the median of the rest."""
    import mindspore as ms

    net.set_train(False)
    x = ms.Tensor(random_images(net, batch))
    start = time.perf_counter()
    net(x).asnumpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        net(x).asnumpy()
        times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": statistics.median(times), "times_s": times}


def compare_modes(net, batch: int = 2) -> float:
    """Max abs difference between GRAPH and PYNATIVE logits on the same random input; leaves GRAPH mode set."""
    import mindspore as ms

    net.set_train(False)
    x = ms.Tensor(random_images(net, batch, seed=1))
    ms.set_context(mode=ms.GRAPH_MODE)
    graph = net(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    pynative = net(x).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    return float(np.abs(graph - pynative).max())
