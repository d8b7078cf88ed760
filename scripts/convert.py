"""Convert ViT weights (timm/HF .safetensors, HF model folder, Google .npz, mindcv or tutorial .ckpt) to an ms_vit
checkpoint with metadata.

    python scripts/convert.py ViT-B_16.npz ckpt/vit_b_16_google.ckpt
    python scripts/convert.py path/to/hf_model_folder ckpt/vit_hf.ckpt
"""

import sys

from ms_vit.cli import base_parser, run


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("src", help="weights to convert (file or HF model folder)")
    parser.add_argument("dst", help="ms_vit checkpoint to write (.ckpt)")
    parser.add_argument("--model", default=None, help="preset whose architecture the weights have, when neither "
                                                        "metadata nor 64-dimension heads describe it")
    args = parser.parse_args(argv)
    if not args.dst.endswith(".ckpt"):
        parser.error(f"the destination {args.dst} must end with .ckpt")

    from ms_vit import from_pretrained, save_checkpoint, set_up

    set_up(args.device_target)
    net = from_pretrained(args.src, model=args.model)
    print("\n".join(net.load_report.lines()))
    meta = {"format": "ms_vit", "version": 1, "model_name": net.model_name, "model": net.config.to_dict(),
            "class_names": net.class_names, "image_size": net.config.image_size, **net.pretrained_cfg,
            "converted_from": {"path": args.src, "format": net.load_report.format,
                               "preprocessing_from": net.pretrained_cfg_source}}
    save_checkpoint(net, args.dst, meta=meta)
    print(f"wrote {args.dst}: {net.config.num_layers} layers, dim {net.config.embed_dim}, {net.config.num_heads} heads, "
          f"{net.config.num_classes} classes, LayerNorm eps {net.config.layer_norm_eps:g}, GELU {net.config.gelu}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
