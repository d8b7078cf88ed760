"""Fine-tuning modes on a real data set that needs no download: scikit-learn's 1,797 handwritten digits written as an
ImageFolder (48 px RGB PNGs, every 5th image of a class to val/), starting from the demo's checkpoint (6 shape
classes; its head is replaced by a 10-class one). Every mode gets the same epoch budget; the last run is full
fine-tuning with mixup/cutmix + RandAugment + EMA.

    bash run_finetune.sh                     # once: the demo's checkpoint, outputs/demo/best.ckpt
    python bench/digits_modes.py [--epochs 10] [--ckpt outputs/demo/best.ckpt] [--modes full linear frozen lora strong]

Prints one line per run (val top-1 best and last, wall seconds, trainable parameters), a Markdown table and a JSON line.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

# The demo's architecture (configs/demo.yaml): the pretrained checkpoint fixes it.
DEMO = {"model": "vit_ti_16", "image_size": 48, "patch_size": 6, "embed_dim": 96, "num_layers": 4, "num_heads": 4,
        "mlp_dim": 192, "crop_pct": 1.0, "crop_scale": [0.85, 1.0], "crop_ratio": [0.8, 1.25], "hflip": 0.0,
        "batch_size": 32, "optimizer": "adamw", "warmup_epochs": 1, "weight_decay": 0.05, "label_smoothing": 0.1,
        "log_every": 1000}
RUNS = {
    "full": {"finetune_mode": "full", "lr": 5e-4},
    "linear": {"finetune_mode": "linear", "lr": 5e-3},
    "frozen": {"finetune_mode": "frozen", "freeze_blocks": 2, "lr": 5e-4},
    "lora": {"finetune_mode": "lora", "lora_rank": 8, "lr": 2e-3},
    "strong": {"finetune_mode": "full", "lr": 5e-4, "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
               "auto_augment": "randaugment", "aa_magnitude": 27, "aa_num_ops": 2, "ema_decay": 0.99},
}


def write_digits(root: str, size: int = 48) -> str:
    """sklearn's digits as train/<d>/ and val/<d>/ PNGs (every 5th image of each digit to val)."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen = {}
    for image, label in zip(digits.images, digits.target):
        k = seen.get(label, 0)
        seen[label] = k + 1
        split = "val" if k % 5 == 4 else "train"
        folder = os.path.join(root, split, str(label))
        os.makedirs(folder, exist_ok=True)
        gray = cv2.resize((image * (255.0 / 16.0)).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, f"{k:04d}.png"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ckpt", default="outputs/demo/best.ckpt")
    parser.add_argument("--modes", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isfile(args.ckpt):
        raise SystemExit(f"error: {args.ckpt} does not exist: run `bash run_finetune.sh` once (the demo) first")
    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = write_digits(os.path.join(tmp, "digits"))
        for name in args.modes:
            logged = []
            cfg = make_train_config({**DEMO, **RUNS[name], "epochs": args.epochs, "seed": args.seed,
                                     "pretrained": args.ckpt, "data_dir": data_dir,
                                     "output_dir": os.path.join(tmp, name)})
            start = time.perf_counter()
            result = fine_tune(cfg, log=logged.append)
            seconds = time.perf_counter() - start
            trainable = next((line for line in logged if line.startswith("trainable parameters")), "")
            results[name] = {"best_top1": round(result.best_top1, 4),
                             "last_top1": round(result.last.get("top_1", float("nan")), 4),
                             "wall_s": round(seconds, 1), "trainable": trainable}
            print(f"{name}: {results[name]}", flush=True)
    print(f"\n| run ({args.epochs} epochs, digits 1437/360, from the demo checkpoint) | val top-1 best | last | wall s |"
          " trainable |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['best_top1']:.4f} | {r['last_top1']:.4f} | {r['wall_s']:.0f} | {r['trainable']} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
