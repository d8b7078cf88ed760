"""Average the weights of several checkpoints into one plain checkpoint (timm's avg_checkpoints).

    python scripts/average.py --run_dir outputs/demo --last 2              # the run's 2 newest epoch checkpoints
    python scripts/average.py --run_dir outputs/demo --best 2              # its 2 best kept ones by val top-1
    python scripts/average.py --ckpts runA/best.ckpt runB/best.ckpt --output soup.ckpt

Only the network's weights are averaged (in float64, cast back): optimizer state and step counters are left out,
--weights ema averages a run's EMA weights instead of the trained ones, LoRA adapters are merged first. The result
keeps the newest file's metadata (class names, preprocessing) and lists the averaged files under "averaged_from";
eval.py, infer.py, export.py and ms_vit.from_pretrained read it like best.ckpt. A run keeps only its last
keep_checkpoints epoch checkpoints: --last / --best choose among those.
"""

import os
import sys

from ms_vit.cli import base_parser, run


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default=None, help="a training run's output folder (its checkpoints/ folder)")
    choose = parser.add_mutually_exclusive_group(required=True)
    choose.add_argument("--last", type=int, default=None, metavar="N", help="average the run's N newest epochs")
    choose.add_argument("--best", type=int, default=None, metavar="N",
                        help="average the run's N kept epochs of best val top-1 (metrics.csv)")
    choose.add_argument("--ckpts", nargs="+", default=None, metavar="FILE", help="average these checkpoint files")
    parser.add_argument("--weights", choices=("trained", "ema"), default="trained",
                        help="which weights of a training checkpoint: the trained ones or the EMA's")
    parser.add_argument("--output", default=None, help="checkpoint to write (default: RUN_DIR/averaged.ckpt)")
    args = parser.parse_args(argv)
    if args.ckpts is None and args.run_dir is None:
        parser.error("--last and --best need --run_dir (the training run's output folder)")
    if args.ckpts is not None and args.run_dir is not None:
        parser.error("give either --ckpts or --run_dir with --last / --best")
    if args.output is None:
        if args.run_dir is None:
            parser.error("--ckpts needs --output (the checkpoint to write)")
        args.output = os.path.join(args.run_dir, "averaged.ckpt")

    from ms_vit.checkpoint.average import select_checkpoints, write_average

    paths = args.ckpts or select_checkpoints(args.run_dir, last=args.last, best=args.best, weights=args.weights)
    print(f"averaging the {args.weights} weights of {len(paths)} checkpoints: "
          + ", ".join(os.path.relpath(p, args.run_dir) if args.run_dir else p for p in paths))
    path = write_average(paths, args.output, args.weights)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
