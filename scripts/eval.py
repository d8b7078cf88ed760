"""Evaluate a checkpoint on a folder of class folders: top-1/top-5, macro-F1, calibration error, confusion matrix.

    python scripts/eval.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/val
    python scripts/eval.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/val --tta flip --results_file runs.csv
    python scripts/eval.py --ckpt ckpt/vit_b_16_224.ckpt --data_dir dataset/vit_imagenet_dataset/dataset/val
    python scripts/eval.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/val --gallery 24
    python scripts/eval.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/val --precision bf16
    python scripts/eval.py --ckpt outputs/cifar10/best.ckpt --dataset cifar10 --data_dir dataset/cifar-10-binary
"""

import sys

from ms_vit.cli import base_parser, run
from ms_vit.evaluate.run import PRECISIONS
from ms_vit.evaluate.tta import MODES


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (ms_vit's, or the tutorial's vit_b_16_224.ckpt)")
    parser.add_argument("--data_dir", required=True,
                        help="folder whose sub-folders are the classes (class names, or ImageNet WordNet ids); with "
                             "--dataset cifar10, the folder holding CIFAR-10's binary files (test_batch.bin)")
    parser.add_argument("--dataset", choices=("folder", "cifar10"), default="folder",
                        help="folder: class folders of images; cifar10: the CIFAR-10 binary test file")
    parser.add_argument("--json", default="outputs/eval/report.json",
                        help="JSON report; confusion.csv, confusion.png and reliability.png go beside it")
    parser.add_argument("--tta", choices=MODES, default="none",
                        help="test-time augmentation, logits averaged: none; flip (the image and its mirror); crops "
                             "(centre and 4 corner crops of a resize to image_size / min(crop_pct, 0.875))")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 matmuls on CPUs with avx512_bf16 or amx_bf16, else fp32; bf16: bf16 matmuls "
                             "with fp32 accumulation (CPU only; numbers within bf16 rounding of fp32); fp32")
    parser.add_argument("--temperature", type=float, default=None,
                        help="divide the logits by this before the loss and ECE (default: the checkpoint's, fitted by "
                             "calibrate.py, else 1; 1 shows the raw logits)")
    parser.add_argument("--results_file", default=None, metavar="CSV",
                        help="append one row (checkpoint, data, tta, temperature, top-1/top-5, macro-F1, balanced "
                             "accuracy, ECE, images/s) to this CSV, to compare runs; the header is written when new")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has, when it has "
                                                        "no metadata and is not 64 dimensions per head")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="resize to image_size / crop_pct then centre-crop (default: the checkpoint's; for a file "
                             "from elsewhere, its source's)")
    parser.add_argument("--num_workers", type=int, default=0, help="decoding workers (0: from the core count)")
    parser.add_argument("--bad_images", choices=("fail", "skip"), default="fail",
                        help="an image that cannot be decoded stops the run, or is skipped and counted")
    parser.add_argument("--gallery", type=int, default=0, metavar="N",
                        help="also write gallery.png beside the report: the N most confident mistakes (thumbnail, "
                             "true and predicted class, probability), listed under 'mistakes' in the report")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    if args.gallery < 0:
        parser.error("--gallery must be 0 (off) or a positive number of images")
    if args.temperature is not None and not args.temperature > 0:
        parser.error("--temperature must be a positive number (1: the raw logits)")

    from ms_vit import set_up
    from ms_vit.checkpoint.pretrained_cfg import describe_preprocess
    from ms_vit.evaluate.run import (append_results, check_results_file, evaluate, evaluate_cifar,
                                     load_for_inference, resolve_precision, write_report)
    from ms_vit.evaluate.tta import describe

    if args.results_file:
        check_results_file(args.results_file)

    # Before set_up, so that --precision bf16 with another device is its own one-line error.
    precision = resolve_precision(args.precision, args.device_target)
    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model, precision)
    print(f"precision: {net.precision} ({net.precision_reason})")
    prep = {**net.preprocess, "crop_pct": args.crop_pct or net.preprocess["crop_pct"]}
    where = net.preprocess_source + ("; crop_pct from --crop_pct" if args.crop_pct else "")
    print(f"preprocessing: {describe_preprocess(prep)} ({where})")
    if args.dataset == "cifar10":
        if args.gallery:
            parser.error("--gallery draws image files: not available with --dataset cifar10")
        report = evaluate_cifar(net, args.data_dir, args.batch_size, args.num_workers, args.tta, args.temperature)
    else:
        report = evaluate(net, args.data_dir, args.batch_size, args.crop_pct, args.num_workers,
                          bad_images=args.bad_images, gallery=args.gallery, tta=args.tta,
                          temperature=args.temperature)
    report = write_report({"checkpoint": args.ckpt, "data_dir": args.data_dir, "batch_size": args.batch_size,
                           **report}, args.json)
    source = "--temperature" if args.temperature is not None else \
        ("the checkpoint's" if net.temperature != 1.0 else "none fitted")
    print(f"tta: {describe(args.tta)}; temperature {report['temperature']:.4g} ({source})")
    print(f"top-1 {report['top_1']:.4f}  top-{report['top_k']} {report['top_5']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
          f"ECE {report['ece']:.4f}  loss {report['loss']:.4f}  images {report['num_images']}  "
          f"{report['images_per_s']:.1f} images/s"
          + (f"  ({report['skipped']} unreadable skipped)" if report["skipped"] else ""))
    print(f"report: {args.json}  confusion matrix: {report['confusion_csv']}"
          + (f", {report['confusion_png']}" if report["confusion_png"] else "")
          + f"  reliability diagram: {report['reliability_png']}")
    if args.results_file:
        print(f"results: one row appended to {append_results(args.results_file, report)}")
    if args.gallery:
        print(f"most confident mistakes: {report['gallery_png']} ({len(report['mistakes'])} shown)"
              if report.get("gallery_png") else "most confident mistakes: none (every image is right)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
