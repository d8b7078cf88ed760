"""The CIFAR-10 recipe and TokenLearner end to end on real data that needs no download: scikit-learn's handwritten
digits (1,797 8x8 images, 10 classes), written as CIFAR-10 binary files and trained through the CIFAR-10 path.

    python bench/digits.py [--recipe_epochs 10] [--mini_epochs 20] [--skip_recipe] [--skip_mini]

1. configs/vit_cifar10_scratch.yaml as shipped (ViT-Ti width, 12 blocks, patch 4 on 32 px), for --recipe_epochs
   (warmup shortened to one epoch for the short budget), on an 80/20 stratified split.
2. Seed 002's mini ViT (dim 128, 4 blocks, 4 heads, MLP 256, 64 patch tokens) with and without TokenLearner
   (8 tokens after block 2) for --mini_epochs, same seed and data: the table of parameters, GFLOPs and accuracy.
Prints the test accuracy, wall and CPU time of each run and ends with one JSON line. Needs requirements-dev.txt.
"""

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MINI = {"model": "vit_ti_16", "embed_dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 256, "drop_rate": 0.1,
        "pool": "mean"}


def write_digits(folder: str, seed: int = 0) -> tuple[int, int]:
    """Digits as 32x32 RGB CIFAR-10 binary files: 8x8 grey (0-16) scaled to 0-255, resized bilinearly."""
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from ms_vit.data import cifar

    digits = load_digits()
    grey = (digits.images * (255.0 / 16.0)).astype(np.float32)
    big = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR) for img in grey])
    rgb = np.repeat(np.clip(big, 0, 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(rgb, digits.target, test_size=0.2, random_state=seed,
                                                        stratify=digits.target)
    cifar.write_split(folder, "train", x_train, y_train, files=5)
    cifar.write_split(folder, "test", x_test, y_test)
    with open(os.path.join(folder, cifar.META_FILE), "w") as handle:
        handle.write("\n".join(str(d) for d in range(10)) + "\n")
    return len(x_train), len(x_test)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train(values: dict) -> dict:
    from ms_vit.models.complexity import total_macs
    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    cfg = make_train_config(values)
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fine_tune(cfg, log=lambda line: print("  " + line, flush=True))
    net = result.net
    return {"test_top1": round(result.last["top_1"], 4), "best_top1": round(result.best_top1, 4),
            "epochs": cfg.epochs, "batch_size": cfg.batch_size, "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
            "params": sum(p.size for p in net.get_parameters()), "gflops": round(2 * total_macs(net.config) / 1e9, 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe_epochs", type=int, default=10)
    parser.add_argument("--recipe_batch", type=int, default=None,
                        help="batch size for the recipe run (default: the recipe's 128, 11 steps per epoch here)")
    parser.add_argument("--mini_epochs", type=int, default=20)
    parser.add_argument("--skip_recipe", action="store_true")
    parser.add_argument("--skip_mini", action="store_true")
    args = parser.parse_args()

    from ms_vit.config import read_yaml

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "digits")
        n_train, n_test = write_digits(data_dir)
        print(f"digits as CIFAR-10 binary files: {n_train} train, {n_test} test images in {data_dir}")
        recipe = read_yaml(os.path.join(ROOT, "configs", "vit_cifar10_scratch.yaml"))
        recipe.update(data_dir=data_dir, dataset_url="", log_every=1000, keep_checkpoints=1)
        if not args.skip_recipe:
            print(f"recipe configs/vit_cifar10_scratch.yaml, {args.recipe_epochs} epochs:")
            batch = {"batch_size": args.recipe_batch} if args.recipe_batch else {}
            results["recipe"] = train({**recipe, **batch, "epochs": args.recipe_epochs, "warmup_epochs": 1,
                                       "output_dir": os.path.join(tmp, "recipe")})
        if not args.skip_mini:
            mini = {**recipe, **MINI, "epochs": args.mini_epochs, "warmup_epochs": 1}
            for name, extra in (("mini_vit", {}), ("mini_vit_token_learner_8", {"token_learner_tokens": 8,
                                                                                "token_learner_layer": 2})):
                print(f"{name}, {args.mini_epochs} epochs:")
                results[name] = train({**mini, **extra, "output_dir": os.path.join(tmp, name)})
    print(f"{'run':<26} {'params':>9} {'GFLOPs':>8} {'epochs':>6} {'test top-1':>10} {'wall s':>7} {'CPU s':>7}")
    for name, r in results.items():
        print(f"{name:<26} {r['params']:>9,} {r['gflops']:>8.4f} {r['epochs']:>6} {r['test_top1']:>10.4f} "
              f"{r['wall_s']:>7.0f} {r['cpu_s']:>7.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
