"""Evaluate a checkpoint on a folder of class folders: top-1/top-5, loss, per-class accuracy, confusion matrix.

    python scripts/eval.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/val
    python scripts/eval.py --ckpt ckpt/vit_b_16_224.ckpt --data_dir dataset/vit_imagenet_dataset/dataset/val
"""

import sys

from ms_vit.cli import base_parser, run


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (ms_vit's, or the tutorial's vit_b_16_224.ckpt)")
    parser.add_argument("--data_dir", required=True,
                        help="folder whose sub-folders are the classes (class names, or ImageNet WordNet ids)")
    parser.add_argument("--json", default="outputs/eval/report.json",
                        help="JSON report; confusion.csv and confusion.png go beside it")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has, when it has "
                                                        "no metadata and is not 64 dimensions per head")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="resize to image_size / crop_pct then centre-crop (default: the checkpoint's; for a file "
                             "from elsewhere, its source's)")
    parser.add_argument("--num_workers", type=int, default=0, help="decoding workers (0: from the core count)")
    parser.add_argument("--bad_images", choices=("fail", "skip"), default="fail",
                        help="an image that cannot be decoded stops the run, or is skipped and counted")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")

    from ms_vit import set_up
    from ms_vit.checkpoint.pretrained_cfg import describe_preprocess
    from ms_vit.evaluate import evaluate, load_for_inference, write_report

    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model)
    prep = {**net.preprocess, "crop_pct": args.crop_pct or net.preprocess["crop_pct"]}
    where = net.preprocess_source + ("; crop_pct from --crop_pct" if args.crop_pct else "")
    print(f"preprocessing: {describe_preprocess(prep)} ({where})")
    report = evaluate(net, args.data_dir, args.batch_size, args.crop_pct, args.num_workers, bad_images=args.bad_images)
    report = write_report({"checkpoint": args.ckpt, "data_dir": args.data_dir, "batch_size": args.batch_size,
                           **report}, args.json)
    print(f"top-1 {report['top_1']:.4f}  top-{report['top_k']} {report['top_5']:.4f}  loss {report['loss']:.4f}  "
          f"images {report['num_images']}  {report['images_per_s']:.1f} images/s"
          + (f"  ({report['skipped']} unreadable skipped)" if report["skipped"] else ""))
    print(f"report: {args.json}  confusion matrix: {report['confusion_csv']}"
          + (f", {report['confusion_png']}" if report["confusion_png"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
