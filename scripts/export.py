"""Export a checkpoint's network for deployment (MindSpore Lite, serving, ONNX runtimes) with ms.export.

    python scripts/export.py --ckpt outputs/demo/best.ckpt --format MINDIR            # dynamic batch
    python scripts/export.py --ckpt outputs/demo/best.ckpt --format onnx              # dynamic batch, checked
    python scripts/export.py --ckpt outputs/demo/best.ckpt --format onnx --batch_size 8   # a fixed batch of 8

MINDIR and ONNX files have a dynamic batch dimension by default (any number of images per call), so a server can
batch requests; --batch_size N fixes it at N (AIR, Ascend only, always has a fixed batch: 1 unless given).
MindSpore's ONNX exporter refuses a dynamic input, so the dynamic ONNX graph is derived from two fixed-batch exports
(ms_vit.export.dynamic_onnx: the batch-dependent shape constants become computed from the input); where that cannot
be done, the export stops with a line saying so, and --batch_size exports a fixed batch.

After writing, the file is checked: run at two batch sizes (1 and 3; a fixed export at its own batch) on random
input -- an ONNX file with onnxruntime, a MindIR file with ms.load + nn.GraphCell -- its logits must equal ms_vit's
within 1e-4 x max(1, max |logit|), or the export counts as failed. Each batch's max |logit difference| is printed.
onnxruntime is optional: without it the ONNX check is skipped with a line saying how to install it.
"""

import os
import sys

from ms_vit.cli import base_parser, run

SUFFIXES = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint to export (any format ms_vit reads)")
    parser.add_argument("--format", default="MINDIR", type=str.upper, choices=sorted(SUFFIXES),
                        help="file format of ms.export (MINDIR, AIR or ONNX; any case)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="a fixed batch size for the exported graph (default: a dynamic batch dimension; AIR: 1)")
    parser.add_argument("--output", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has (see eval.py)")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    if args.format == "AIR" and args.batch_size is None:
        args.batch_size = 1

    from ms_vit import set_up
    from ms_vit.evaluate.run import load_for_inference
    from ms_vit.export import CHECK_BATCHES, check_mindir, check_onnx, export_air, export_mindir, export_onnx

    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model)
    net.set_train(False)
    suffix = SUFFIXES[args.format]
    dynamic = args.batch_size is None
    tag = "dynamic" if dynamic else f"b{args.batch_size}"
    output = args.output or os.path.splitext(args.ckpt.rstrip(os.sep))[0] + f"_{tag}{suffix}"
    stem = output[: -len(suffix)] if output.endswith(suffix) else output
    if args.format == "ONNX":
        path = export_onnx(net, stem + suffix, args.batch_size)
    elif args.format == "MINDIR":
        path = export_mindir(net, stem + suffix, args.batch_size)
    else:
        path = export_air(net, stem + suffix, args.batch_size)
    cfg = net.config
    batch = "batch" if dynamic else str(args.batch_size)
    print(f"wrote {path}: input ({batch}, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) float32, normalised "
          f"as in eval; output logits ({batch}, {cfg.num_classes})"
          + (" -- the batch dimension is dynamic" if dynamic else ""))
    batches = CHECK_BATCHES if dynamic else (args.batch_size,)
    if args.format == "ONNX":
        diffs = check_onnx(net, path, batches)
        if diffs is None:
            print("onnxruntime is not installed: the ONNX file was not checked (pip install onnxruntime)")
            return 0
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__}"
    elif args.format == "MINDIR":
        diffs, runtime = check_mindir(net, path, batches), "ms.load + nn.GraphCell"
    else:
        return 0  # AIR runs on Ascend's own tools only
    for size, diff in diffs.items():
        print(f"checked with {runtime} at batch {size}: max logit difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
