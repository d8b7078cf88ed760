"""Export a checkpoint's network for deployment (MindSpore Lite, serving) with ms.export.

    python scripts/export.py --ckpt outputs/demo/best.ckpt --format MINDIR [--batch_size 1] [--output FILE]
"""

import os
import sys

from ms_vit.cli import base_parser, run

SUFFIXES = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint to export (any format ms_vit reads)")
    parser.add_argument("--format", default="MINDIR", choices=sorted(SUFFIXES), help="file format of ms.export")
    parser.add_argument("--batch_size", type=int, default=1, help="the exported graph's fixed batch size")
    parser.add_argument("--output", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has (see eval.py)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")

    import mindspore as ms
    import numpy as np

    from ms_vit import set_up
    from ms_vit.evaluate import load_for_inference

    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model)
    suffix = SUFFIXES[args.format]
    output = args.output or os.path.splitext(args.ckpt.rstrip(os.sep))[0] + f"_b{args.batch_size}{suffix}"
    stem = output[: -len(suffix)] if output.endswith(suffix) else output
    cfg = net.config
    sample = ms.Tensor(np.zeros((args.batch_size, cfg.in_channels, cfg.image_size, cfg.image_size), np.float32))
    try:
        ms.export(net, sample, file_name=stem, file_format=args.format)
    except (RuntimeError, ValueError, TypeError) as err:
        raise_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        from ms_vit.errors import MsVitError

        raise MsVitError(f"export to {args.format} failed ({raise_line}): MINDIR is supported on every device; "
                         "AIR needs Ascend") from err
    print(f"wrote {stem + suffix}: input (batch {args.batch_size}, {cfg.in_channels}, {cfg.image_size}, "
          f"{cfg.image_size}) float32, normalised as in eval; output logits ({args.batch_size}, {cfg.num_classes})")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
