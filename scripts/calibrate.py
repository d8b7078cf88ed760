"""Fit a temperature on held-out images (temperature scaling) and store it in the checkpoint's metadata.

    python scripts/calibrate.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/calib
    python scripts/calibrate.py --ckpt outputs/demo/best.ckpt --data_dir dataset/demo/calib --output calibrated.ckpt

One temperature T > 0 minimises the mean NLL of softmax(logits / T) on --data_dir (class folders, as eval.py reads;
use images the model was neither trained nor selected on, and not the ones you report on). The checkpoint is
rewritten atomically with "temperature": T added to its metadata (every other key, the class names and every weight
kept), or a copy is written to --output. eval.py's loss and ECE and infer.py's probabilities then use logits / T;
top-1 does not change. Prints the NLL and ECE before and after.
"""

import sys

from ms_vit.cli import base_parser, run
from ms_vit.evaluate.tta import MODES


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="MindSpore .ckpt to calibrate (ms_vit's or the tutorial's)")
    parser.add_argument("--data_dir", required=True, help="held-out folder whose sub-folders are the classes")
    parser.add_argument("--output", default=None,
                        help="write the calibrated checkpoint here (.ckpt) instead of rewriting --ckpt")
    parser.add_argument("--tta", choices=MODES, default="none",
                        help="fit on the logits of this test-time augmentation (the one you will evaluate with)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--model", default=None, help="preset whose architecture the checkpoint has (see eval.py)")
    parser.add_argument("--num_workers", type=int, default=0, help="decoding workers (0: from the core count)")
    parser.add_argument("--bad_images", choices=("fail", "skip"), default="skip",
                        help="an image that cannot be decoded is skipped and counted (default), or stops the run")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    if args.output is not None and not args.output.endswith(".ckpt"):
        parser.error(f"--output {args.output} must end with .ckpt")

    import os

    from ms_vit import set_up
    from ms_vit.errors import CheckpointError
    from ms_vit.evaluate import metrics
    from ms_vit.evaluate.calibrate import BOUNDS, fit_temperature, mean_nll, write_temperature
    from ms_vit.evaluate.run import folder_logits, load_for_inference
    from ms_vit.evaluate.tta import describe

    if not args.ckpt.endswith(".ckpt"):
        raise CheckpointError(f"{args.ckpt}: the temperature is stored in a MindSpore .ckpt's metadata; convert it "
                              "first (python scripts/convert.py) and calibrate the .ckpt it writes")
    set_up(args.device_target)
    net = load_for_inference(args.ckpt, args.model)
    found = folder_logits(net, args.data_dir, args.batch_size, num_workers=args.num_workers,
                          bad_images=args.bad_images, tta=args.tta)
    logits, labels = found["logits"], found["labels"]
    temperature = fit_temperature(logits, labels)
    before = {"nll": mean_nll(logits, labels), "ece": metrics.expected_calibration_error(logits, labels)}
    after = {"nll": mean_nll(logits, labels, temperature),
             "ece": metrics.expected_calibration_error(logits / temperature, labels)}
    print(f"held-out: {args.data_dir}, {len(labels)} images; tta: {describe(args.tta)}")
    if net.temperature != 1.0:
        print(f"the checkpoint's previous temperature {net.temperature:.4g} is replaced (the fit uses raw logits)")
    print(f"temperature {temperature:.4f}" + ("  (at the search bound: the held-out images say little about it)"
                                              if min(abs(temperature / b - 1) for b in BOUNDS) < 1e-3 else ""))
    print(f"NLL {before['nll']:.4f} -> {after['nll']:.4f}   ECE {before['ece']:.4f} -> {after['ece']:.4f}   "
          f"(T = 1 -> T = {temperature:.4f})")
    record = {"data_dir": os.path.abspath(args.data_dir), "images": int(len(labels)), "tta": args.tta,
              "nll_before": before["nll"], "nll_after": after["nll"], "ece_before": before["ece"],
              "ece_after": after["ece"]}
    written = write_temperature(args.ckpt, temperature, args.output, record)
    print(f"temperature stored in {written} (metadata key 'temperature')")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
