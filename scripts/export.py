"""Export a checkpoint's network for deployment (MindSpore Lite, serving, ONNX runtimes) with ms.export.

    python scripts/export.py --ckpt outputs/demo/best.ckpt --format MINDIR [--batch_size 1] [--output FILE]
    python scripts/export.py --ckpt outputs/demo/best.ckpt --format onnx    # then checked with onnxruntime

An ONNX file is run once with onnxruntime on random input after writing: its logits must equal ms_vit's within
1e-4 x max(1, max |logit|), or the export counts as failed (onnxruntime is optional: without it the check is skipped
with a line saying how to install it).
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
    parser.add_argument("--batch_size", type=int, default=1, help="the exported graph's fixed batch size")
    parser.add_argument("--output", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has (see eval.py)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")

    import mindspore as ms
    import numpy as np

    from ms_vit import set_up
    from ms_vit.evaluate.run import load_for_inference

    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model)
    suffix = SUFFIXES[args.format]
    output = args.output or os.path.splitext(args.ckpt.rstrip(os.sep))[0] + f"_b{args.batch_size}{suffix}"
    stem = output[: -len(suffix)] if output.endswith(suffix) else output
    cfg = net.config
    sample = ms.Tensor(np.zeros((args.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size), np.float32))
    if args.format == "ONNX":
        from ms_vit.models.vit import Attention

        for _, cell in net.cells_and_names():  # ONNX has no Unstack: the attention splits q, k, v by slicing
            if isinstance(cell, Attention):
                cell.onnx_export = True
    try:
        ms.export(net, sample, file_name=stem, file_format=args.format)
    except (RuntimeError, ValueError, TypeError) as err:
        raise_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        from ms_vit.errors import MsVitError

        raise MsVitError(f"export to {args.format} failed ({raise_line}): MINDIR is supported on every device; "
                         "AIR needs Ascend") from err
    print(f"wrote {stem + suffix}: input (batch {args.batch_size}, {cfg.in_channels}, {cfg.image_size}, "
          f"{cfg.image_size}) float32, normalised as in eval; output logits ({args.batch_size}, {cfg.num_classes})")
    if args.format == "ONNX":
        check_onnx(net, stem + suffix, sample.shape)
    return 0


def check_onnx(net, path: str, shape) -> float | None:
    """Run ``path`` with onnxruntime on random input and compare with ``net``; returns the max logit difference
    (None when onnxruntime is not installed). Raises when it is above 1e-4 x max(1, max |logit|)."""
    import mindspore as ms
    import numpy as np

    from ms_vit.errors import MsVitError

    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: the ONNX file was not checked (pip install onnxruntime)")
        return None
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = net(ms.Tensor(x)).asnumpy()
    diff = float(np.abs(theirs - ours).max())
    bound = 1e-4 * max(1.0, float(np.abs(ours).max()))
    if not diff <= bound:
        raise MsVitError(f"{path}: onnxruntime's logits differ from ms_vit's by {diff:.3g} (bound {bound:.3g}): "
                         "do not deploy this file; export MINDIR instead and report the model")
    print(f"checked with onnxruntime {onnxruntime.__version__}: max logit difference {diff:.2e} (bound {bound:.1e})")
    return diff


if __name__ == "__main__":
    sys.exit(run(main))
