"""Check an ImageFolder data set (train/ and val/ class folders) before training.

    python scripts/check_data.py dataset/demo [--image_size 224] [--quarantine DIR]

Exits 1 when something would break or falsify training: unreadable (zero-byte, corrupt, truncated, non-image)
files, val images that are also in train, val classes absent from train, empty class folders. Also reports the
largest/smallest class ratio of train/ and, from --imbalance_ratio on, suggests the class_balance key.
"""

import os
import sys

from ms_vit.cli import base_parser, run


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="folder with train/ and val/ (or one folder of class folders)")
    parser.add_argument("--image_size", type=int, default=224, help="model input side: smaller images are noted")
    parser.add_argument("--quarantine", default=None, help="move files with errors here (nothing is deleted)")
    parser.add_argument("--fast", action="store_true", help="sizes and magic bytes only (what training runs)")
    parser.add_argument("--imbalance_ratio", type=float, default=None,
                        help="suggest class_balance from this largest/smallest class ratio of train/ on (default 3)")
    args = parser.parse_args(argv)

    from ms_vit.data.check import quarantine, scan, summary_lines

    report = scan(args.data_dir, args.image_size, full=not args.fast)
    print("\n".join(summary_lines(report, suggest_ratio=args.imbalance_ratio)))
    errors = report.errors
    if args.quarantine and errors:
        moved = quarantine(report, args.quarantine)
        print(f"moved {len(moved)} files to {args.quarantine} (paths kept relative to {args.data_dir})")
        remaining = [f for f in errors if os.path.exists(f.path)]  # folders are never moved
        if remaining:
            print(f"{len(remaining)} problems remain (folders are not moved): fix them by hand", file=sys.stderr)
        return 1 if remaining else 0
    if errors:
        print(f"{len(errors)} problems would break or falsify training: fix them, or move the files away with "
              f"--quarantine DIR", file=sys.stderr)
        return 1
    print(f"{args.data_dir}: no problems found")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
