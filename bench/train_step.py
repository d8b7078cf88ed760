"""Seconds per training step (forward, backward, optimizer: the engine's own TrainStep) and peak memory.

    python bench/train_step.py [--model vit_b_16] [--batch_size 16] [--steps 3] [--config configs/vit_b_16_finetune.yaml]

Random images and labels, GRAPH mode, the recipe's optimizer and AMP level; prints the first step (with
compilation), the median of the rest and the process's peak resident memory.
"""

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b_16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--config", default=os.path.join("configs", "vit_b_16_finetune.yaml"))
    args = parser.parse_args()

    import mindspore as ms
    import numpy as np

    from ms_vit import create_model, set_up
    from ms_vit.amp import apply_amp, resolve_amp_level
    from ms_vit.config import make_train_config, read_yaml
    from ms_vit.train import build_train_cell

    device = set_up(None, "graph")
    values = read_yaml(args.config)
    values.update(model=args.model, batch_size=args.batch_size)
    cfg = make_train_config(values)
    ms.set_seed(0)
    net = create_model(cfg.model, num_classes=args.num_classes, **cfg.model_overrides())
    amp_level = resolve_amp_level(cfg.amp_level, device)
    apply_amp(net, amp_level)
    train_cell, _ = build_train_cell(net, cfg, args.num_classes, steps_per_epoch=args.steps + 1, amp_level=amp_level)
    train_cell.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((args.batch_size, 3, cfg.image_size, cfg.image_size)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, args.num_classes, args.batch_size).astype(np.int32))
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        loss, _, _ = train_cell(x, y)
        loss.asnumpy()
        times.append(time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"{cfg.model} batch {args.batch_size} on {device} (AMP {amp_level}, GRAPH): first step {times[0]:.1f} s "
          f"(with compilation), then {statistics.median(times[1:]):.2f} s/step median of {args.steps}; "
          f"peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
