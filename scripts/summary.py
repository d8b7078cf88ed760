"""Describe a ViT preset or checkpoint: architecture, parameters, load report, and optionally forward timing.

    python scripts/summary.py vit_b_16 [--image_size 224] [--num_classes 1000]
    python scripts/summary.py ckpt/vit_b_16_224.ckpt --batch_size 1 16 --compare_modes
"""

import os
import sys

from ms_vit.cli import base_parser, run


def main(argv):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("model", help="preset name (vit_b_16, ...) or checkpoint path")
    parser.add_argument("--image_size", type=int, default=None, help="input side (default: preset's 224 / checkpoint's)")
    parser.add_argument("--num_classes", type=int, default=None, help="classes (default: 1000 / checkpoint's)")
    parser.add_argument("--patch_impl", choices=("matmul", "conv"), default=None,
                        help="patch embedding as reshape + MatMul (default) or the tutorial's Conv2d; same weights")
    parser.add_argument("--config", default=None,
                        help="a training recipe (YAML): its model options (sizes, TokenLearner) apply to the preset")
    parser.add_argument("--token_learner_tokens", type=int, default=None, help="TokenLearner with this many tokens")
    parser.add_argument("--token_learner_layer", type=int, default=None, help="TokenLearner after this many blocks")
    parser.add_argument("--token_fuser", action="store_true", help="TokenFuser after the last block")
    parser.add_argument("--batch_size", type=int, nargs="*", default=[],
                        help="time a GRAPH-mode forward at these batch sizes (median of --repeat runs)")
    parser.add_argument("--repeat", type=int, default=3, help="timed forwards per batch size")
    parser.add_argument("--compare_modes", action="store_true",
                        help="run the same input in GRAPH and PYNATIVE mode and print the max abs logit difference")
    args = parser.parse_args(argv)

    from ms_vit import PRESETS, create_model, from_pretrained, set_up
    from ms_vit.evaluate.timing import compare_modes, time_forward

    set_up(args.device_target, mode="graph")
    overrides = {"patch_impl": args.patch_impl} if args.patch_impl else {}
    if args.config:
        from ms_vit.config import make_train_config, read_yaml

        overrides.update(make_train_config(read_yaml(args.config)).model_overrides())
    for key in ("token_learner_tokens", "token_learner_layer"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.token_fuser:
        overrides["token_fuser"] = True
    from ms_vit.checkpoint.hub import is_hub_name

    if args.model in PRESETS or not (os.path.exists(args.model) or os.path.splitext(args.model)[1]
                                     or is_hub_name(args.model)):
        if args.image_size:
            overrides["image_size"] = args.image_size
        net = create_model(args.model, num_classes=args.num_classes, **overrides)
    else:
        if args.image_size:
            overrides["image_size"] = args.image_size
        net = from_pretrained(args.model, num_classes=args.num_classes, **overrides)
        print("\n".join(net.load_report.lines()))
    cfg = net.config
    n_params = sum(p.size for p in net.get_parameters())
    print(f"model: {getattr(net, 'model_name', 'custom')}  image {cfg.image_size}px  patch {cfg.patch_size}  "
          f"dim {cfg.embed_dim}  layers {cfg.num_layers}  heads {cfg.num_heads}  mlp {cfg.mlp_dim}  "
          f"classes {cfg.num_classes}  LayerNorm eps {cfg.layer_norm_eps:g}  GELU {cfg.gelu}"
          + (f"  TokenLearner {cfg.token_learner_tokens} tokens after block {cfg.learner_after}"
             + (" + TokenFuser" if cfg.token_fuser else "") if cfg.token_learner_tokens else ""))
    print(f"parameters: {n_params:,}")
    from ms_vit.models.complexity import stage_table

    rows = stage_table(cfg)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'stage':<{width}}  {'parameters':>13}  {'GMACs':>8}")
    for name, params, macs in rows:
        print(f"{name:<{width}}  {params:>13,}  {macs / 1e9:>8.3f}")
    print(f"{'total':<{width}}  {sum(r[1] for r in rows):>13,}  {sum(r[2] for r in rows) / 1e9:>8.2f}  "
          f"(multiply-accumulates per image at {cfg.image_size}px; GFLOPs = 2 x GMACs = "
          f"{2 * sum(r[2] for r in rows) / 1e9:.4f})")
    for batch in args.batch_size:
        timing = time_forward(net, batch, repeat=args.repeat)
        print(f"forward batch {batch:>3} (GRAPH): {timing['median_s']:.3f} s median of {args.repeat} "
              f"(first call with compile {timing['first_s']:.1f} s)")
    if args.compare_modes:
        print(f"GRAPH vs PYNATIVE max abs logit difference: {compare_modes(net, batch=2):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
