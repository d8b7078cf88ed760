"""Predict the class of images and write copies annotated with the prediction (and attention, on request).

    python scripts/infer.py --ckpt outputs/demo/best.ckpt --input dataset/demo/val/star
    python scripts/infer.py --ckpt ckpt/vit_b_16_224.ckpt --input "photos/*.jpg" --topk 5 --attention
    python scripts/infer.py --ckpt outputs/demo/best.ckpt --input dataset/demo/val/star --tta flip

The probabilities are softmax(logits / T) with the checkpoint's temperature T (scripts/calibrate.py), else T = 1.
"""

import os
import sys

from ms_vit.cli import base_parser, run
from ms_vit.evaluate.run import PRECISIONS
from ms_vit.evaluate.tta import MODES


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint (ms_vit's, or the tutorial's vit_b_16_224.ckpt)")
    parser.add_argument("--input", required=True, help="an image, a folder (searched recursively) or a quoted glob")
    parser.add_argument("--output", default="outputs/infer", help="folder for annotated images and predictions.*")
    parser.add_argument("--topk", type=int, default=5, help="predictions listed per image")
    parser.add_argument("--attention", action="store_true", help="blend an attention-rollout heat map over each image")
    parser.add_argument("--meta_mat", default=None,
                        help="ILSVRC2012 devkit data/meta.mat for labels (when the checkpoint has no class names)")
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has (see eval.py)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tta", choices=MODES, default="none",
                        help="test-time augmentation, logits averaged (see eval.py); --attention draws the plain view's")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 matmuls on CPUs with avx512_bf16 or amx_bf16, else fp32; bf16: bf16 matmuls "
                             "with fp32 accumulation (CPU only; numbers within bf16 rounding of fp32); fp32")
    parser.add_argument("--temperature", type=float, default=None,
                        help="probabilities are softmax(logits / T) (default: the checkpoint's, else 1)")
    args = parser.parse_args(argv)
    if args.topk < 1 or args.batch_size < 1:
        parser.error("--topk and --batch_size must be at least 1")
    if args.temperature is not None and not args.temperature > 0:
        parser.error("--temperature must be a positive number (1: the raw logits)")

    from ms_vit import set_up
    from ms_vit.checkpoint.pretrained_cfg import describe_preprocess
    from ms_vit.evaluate.run import load_for_inference, resolve_precision
    from ms_vit.evaluate.infer import find_images, predict_files
    from ms_vit.evaluate.tta import describe
    from ms_vit.data.labels import resolve_labels

    # Before set_up, so that --precision bf16 with another device is its own one-line error.
    precision = resolve_precision(args.precision, args.device_target)
    set_up(args.device_target)
    paths = find_images(args.input)
    net = load_for_inference(args.ckpt, args.model, precision)
    print(f"precision: {net.precision} ({net.precision_reason})")
    print(f"preprocessing: {describe_preprocess(net.preprocess)} ({net.preprocess_source})")
    temperature = net.temperature if args.temperature is None else args.temperature
    print(f"tta: {describe(args.tta)}; temperature {temperature:.4g}")
    labels = resolve_labels(net.config.num_classes, net.class_names, args.meta_mat)
    root = args.input if os.path.isdir(args.input) else None
    result = predict_files(net, paths, labels, args.output, args.topk, args.batch_size, args.attention, root,
                           tta=args.tta, temperature=temperature)
    done, skipped = len(result["records"]), len(result["skipped"])
    print(f"{done} image{'s' * (done != 1)} annotated in {args.output}, {skipped} skipped; "
          f"predictions: {result['json']}, {result['csv']}")
    if done == 0:
        print(f"error: none of the {len(paths)} input files could be read as an image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
