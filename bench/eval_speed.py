"""Images per second of scripts/eval.py's code path for a model at a batch size, on generated JPEGs.

    python bench/eval_speed.py [--model vit_b_16] [--batch_size 16] [--images 96]

Writes a random-weight checkpoint in the tutorial's format (1000 classes, no metadata) and a val folder of
ImageNet-sized JPEGs (500x375) under two WordNet-id class folders into a temporary folder, then runs
ms_vit.evaluate.run.evaluate on it (decode, resize, crop, normalise, forward) and prints the figures.
"""

import argparse
import os
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b_16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()

    import cv2
    import mindspore as ms
    import numpy as np

    import ms_vit
    from ms_vit.evaluate.run import evaluate, load_for_inference

    ms_vit.set_up(None, "graph")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.ckpt")
        ms.save_checkpoint(ms_vit.create_model(args.model), ckpt)
        for i in range(args.images):
            folder = os.path.join(tmp, "val", ("n01440764", "n02107142")[i % 2])
            os.makedirs(folder, exist_ok=True)
            cv2.imwrite(os.path.join(folder, f"{i}.jpg"), rng.integers(0, 256, (375, 500, 3), dtype=np.uint8))
        net = load_for_inference(ckpt)
        evaluate(net, os.path.join(tmp, "val"), batch_size=args.batch_size)  # compiles the graph
        report = evaluate(net, os.path.join(tmp, "val"), batch_size=args.batch_size)
    print(f"{args.model} eval, batch {args.batch_size}, {report['num_images']} JPEGs 500x375: "
          f"{report['images_per_s']:.2f} images/s ({report['seconds']:.1f} s, decode and preprocessing included)")


if __name__ == "__main__":
    main()
