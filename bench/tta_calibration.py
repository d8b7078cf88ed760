"""Test-time augmentation and temperature scaling on real images: top-1, macro-F1, ECE and images/s of
--tta none/flip/crops, before and after a temperature fitted on held-out images.

The model is the README's real-data benchmark (bench/real_transfer.py): DINOv2 ViT-S/14 (build/dinov2_s14) with a
linear probe on scikit-learn's digits (dataset/real_transfer/digits, written by real_transfer.py's ``write_digits``
when missing), with real_transfer.py's linear recipe (adamw 2e-3, 30 epochs, batch 32, no flip) at --image_size
(default 112 px). --ckpt reuses a checkpoint instead of training.

digits' val split (360 images) is cut in two halves, deterministically (per class, the sorted files alternate):
dataset/real_transfer/digits_tta/val/ (the calibration half, also the fine-tuning's validation) and
dataset/real_transfer/digits_tta/test/ (the test half, used for nothing but the figures); train/ links to digits'.
For each TTA mode, the logits of both halves come from ``evaluate.run.folder_logits`` (eval.py's path); one
temperature per mode is fitted on the calibration half (``evaluate.calibrate.fit_temperature``, as
scripts/calibrate.py --tta MODE does) and applied to the test half. images/s is the test half's rate (decoding and
forward passes; the graphs were compiled on the calibration half). The "none" temperature is also written into a
copy of the checkpoint and read back through ``load_for_inference`` + ``evaluate`` (eval.py's path) as a check.
Mirrored digits are not the digits they mirror (a mirrored 2 or 7 is no digit), so flip TTA is not expected to help
here. Prints a Markdown table and one JSON line; --json PATH writes the figures too.

    python bench/tta_calibration.py --json /tmp/tta_calibration.json
    python bench/tta_calibration.py --ckpt /tmp/tta_calibration/run/best.ckpt     # reuse the fine-tuned model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(ROOT, "dataset", "real_transfer")
MARKER = ".complete"




def _real_transfer():
    """bench/real_transfer.py (beside this script, so on sys.path): its data writer and linear recipe."""
    import real_transfer

    return real_transfer


def split_halves(digits: str, target: str) -> str:
    """target/{train -> digits/train, val (calibration half), test (test half)}: in each class of digits/val, the
    sorted files alternate between the halves (even positions: calibration). Written once, then reused."""
    if os.path.isfile(os.path.join(target, MARKER)):
        return target
    staging = f"{target}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    os.symlink(os.path.abspath(os.path.join(digits, "train")), os.path.join(staging, "train"))
    source = os.path.join(digits, "val")
    for name in sorted(os.listdir(source)):
        files = sorted(os.listdir(os.path.join(source, name)))
        for i, f in enumerate(files):
            folder = os.path.join(staging, "val" if i % 2 == 0 else "test", name)
            os.makedirs(folder, exist_ok=True)
            shutil.copy2(os.path.join(source, name, f), os.path.join(folder, f))
    open(os.path.join(staging, MARKER), "w").close()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def train(rt, data_dir: str, pretrained: str, image_size: int, epochs: int, output_dir: str) -> str:
    ckpt, best = rt.digits_linear_probe(data_dir, pretrained, image_size, epochs, output_dir)
    print(f"fine-tuned: val (calibration half) top-1 best {best:.4f}", flush=True)
    return ckpt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="", help="reuse this fine-tuned digits checkpoint (skips training)")
    parser.add_argument("--image_size", type=int, default=112, help="fine-tuning image size (a multiple of 14)")
    parser.add_argument("--epochs", type=int, default=30, help="linear-probe epochs")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workdir", default="/tmp/tta_calibration", help="fine-tuning output and the checked copy")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import ms_vit
    from ms_vit.evaluate import metrics
    from ms_vit.evaluate.calibrate import fit_temperature, mean_nll, write_temperature
    from ms_vit.evaluate.run import evaluate, folder_logits, load_for_inference, summarize
    from ms_vit.evaluate.tta import MODES

    ms_vit.set_up("CPU", mode="graph")
    begin = time.perf_counter()
    rt = _real_transfer()
    digits = rt.write_digits(os.path.join(DATA_ROOT, "digits"))
    data_dir = split_halves(digits, os.path.join(DATA_ROOT, "digits_tta"))
    calib, test = os.path.join(data_dir, "val"), os.path.join(data_dir, "test")
    sizes = {split: sum(len(f) for _, _, f in os.walk(os.path.join(data_dir, split))) for split in ("val", "test")}
    print(f"CPU: {rt.cpu_description()}\ndata: {os.path.relpath(data_dir, ROOT)} (calibration {sizes['val']}, "
          f"test {sizes['test']} images)", flush=True)
    ckpt = args.ckpt
    if not ckpt:
        pretrained = os.path.relpath(rt.dinov2_folder(), ROOT)
        print(f"fine-tuning a linear probe of {pretrained} at {args.image_size} px, {args.epochs} epochs", flush=True)
        ckpt = train(rt, data_dir, pretrained, args.image_size, args.epochs, os.path.join(args.workdir, "run"))
    train_s = time.perf_counter() - begin
    net = load_for_inference(ckpt)
    print(f"checkpoint: {ckpt} ({net.config.image_size} px)", flush=True)
    rows = []
    for mode in MODES:
        held = folder_logits(net, calib, args.batch_size, tta=mode)  # also compiles the graphs of both halves' shapes
        found = folder_logits(net, test, args.batch_size, tta=mode)
        temperature = fit_temperature(held["logits"], held["labels"])
        for t in (1.0, temperature):
            report = summarize(found["logits"] / t, found["labels"], found["indexing"],
                               [str(i) for i in range(net.config.num_classes)], found["seconds"],
                               found["preprocess"], mode, t)
            rows.append({"tta": mode, "temperature": round(t, 4), "fitted": t != 1.0,
                         "top_1": round(report["top_1"], 4), "macro_f1": round(report["macro_f1"], 4),
                         "ece": round(report["ece"], 4), "nll": round(mean_nll(found["logits"], found["labels"], t), 4),
                         "images_per_s": round(report["images_per_s"], 1), "test_images": report["num_images"],
                         "calibration_ece": round(metrics.expected_calibration_error(held["logits"] / t,
                                                                                     held["labels"]), 4)})
            print(f"   -> {json.dumps(rows[-1])}", flush=True)
    # The stored temperature through eval.py's path: a copy with "none"'s temperature, loaded and evaluated.
    fitted = next(r for r in rows if r["tta"] == "none" and r["fitted"])
    copy = write_temperature(ckpt, fitted["temperature"], os.path.join(args.workdir, "calibrated.ckpt"))
    check = evaluate(load_for_inference(copy), test, args.batch_size, log=lambda *a: None)
    stored = {"temperature": check["temperature"], "ece": round(check["ece"], 4), "top_1": round(check["top_1"], 4)}
    print(f"stored temperature read back by eval: {json.dumps(stored)}", flush=True)
    total = time.perf_counter() - begin

    print(f"\nCPU: {rt.cpu_description()}; total {total / 60:.1f} min (fine-tuning {train_s / 60:.1f} min)\n")
    print("| --tta | temperature | top-1 | macro-F1 | ECE (15 bins) | NLL | images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        t = f"{r['temperature']:.3f} (fitted)" if r["fitted"] else "1 (raw)"
        print(f"| {r['tta']} | {t} | {r['top_1']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} | {r['nll']:.4f} | "
              f"{r['images_per_s']:.1f} |")
    summary = {"cpu": rt.cpu_description(), "checkpoint": ckpt, "image_size": net.config.image_size,
               "calibration_images": sizes["val"], "test_images": sizes["test"], "total_s": round(total, 1),
               "train_s": round(train_s, 1), "rows": rows, "stored_check": stored, "argv": sys.argv[1:]}
    rt.write_summary(summary, args.json)


if __name__ == "__main__":
    main()
