"""Parameters and multiply-accumulates of a ViT, per stage, from its configuration alone; the memory a training
step takes, and how a training batch splits into per-process micro-batches."""

from __future__ import annotations

from dataclasses import dataclass

from ms_vit.config import ViTConfig
from ms_vit.errors import ConfigError

# LayerNorm counted as 5 operations per element, as fvcore (and so timm's published 17.58 GMACs for ViT-B/16) does;
# softmax, GELU and residual additions are not counted.
LAYER_NORM_OPS = 5


def stage_table(cfg: ViTConfig) -> list[tuple[str, int, int]]:
    """[(stage, parameters, MACs)] for one image: patch embedding, the blocks' parts (before and after TokenLearner
    when there is one, and TokenLearner/TokenFuser themselves), final norm and head."""
    d, n, r = cfg.embed_dim, cfg.num_patches, cfg.num_register_tokens
    patch_in = cfg.in_channels * cfg.patch_size ** 2
    rows = [("patch embedding", patch_in * d + d, n * patch_in * d),
            ("class token + positions" + (f" + {r} registers" if r else ""), d + (n + 1) * d + r * d, 0)]
    k, s, b = cfg.learner_after, cfg.token_learner_tokens, cfg.token_learner_bottleneck
    spans = [(cfg.num_layers, n + 1 + r, "")] if not s else [(k, n + 1, f" ({n + 1} tokens)"),
                                                          (cfg.num_layers - k, s + 1, f" ({s + 1} tokens)")]
    scorer_params, scorer_macs = 2 * d + d * b + b + b * s + s, n * (d * b + b * s) + LAYER_NORM_OPS * n * d
    for layers, t, label in spans:
        rows += _block_rows(cfg, layers, t, label)
        if s and t == n + 1:
            rows.append((f"TokenLearner ({n} -> {s} tokens)", scorer_params, scorer_macs + s * n * d))
    if cfg.token_fuser:
        rows.append((f"TokenFuser ({s} -> {n} tokens)", 4 * d + s * s + s + scorer_params,
                     scorer_macs + s * s * d + n * s * d + 2 * LAYER_NORM_OPS * s * d))
    t_out = n + 1 + r if not s or cfg.token_fuser else s + 1
    head_in = cfg.head_dim
    rows += [("final LayerNorm", 2 * d, LAYER_NORM_OPS * t_out * d),
             ("head", head_in * cfg.num_classes + cfg.num_classes, head_in * cfg.num_classes)]
    return rows


def _block_rows(cfg: ViTConfig, layers: int, t: int, label: str) -> list[tuple[str, int, int]]:
    d, h = cfg.embed_dim, cfg.num_heads
    attn_params = d * 3 * d + 3 * d + d * d + d + (d if cfg.layer_scale else 0)
    attn_macs = t * d * 3 * d + 2 * h * t * t * (d // h) + t * d * d
    mlp_params = 2 * d * cfg.mlp_dim + cfg.mlp_dim + d + (d if cfg.layer_scale else 0)
    mlp_macs = 2 * t * d * cfg.mlp_dim
    norm_macs = LAYER_NORM_OPS * t * d
    return [(f"{layers} x attention (qkv, scores, out){label}", layers * attn_params, layers * attn_macs),
            (f"{layers} x MLP{label}", layers * mlp_params, layers * mlp_macs),
            (f"{2 * layers} x LayerNorm{label}", layers * 4 * d, layers * 2 * norm_macs)]


def total_macs(cfg: ViTConfig) -> int:
    return sum(macs for _, _, macs in stage_table(cfg))


def training_activation_bytes(cfg: ViTConfig, amp_level: str = "O0") -> int:
    """Memory one image's forward and backward take during a training step on MindSpore's CPU backend, estimated.

    The coefficients (fp32 values kept per token per layer: 18 per model-width channel, 5 per MLP channel, 6 per
    attention score) were fitted to the resident memory of ViT-B/16 training steps at batches 2, 4, 8 and 16
    (0.4 GB per image, bench/NOTES.md); the backend keeps every intermediate of a step's graph. Under AMP bf16 the
    fused kernels keep far less (the attention only its probabilities, each Dense its output): 9 per channel, 2 per
    MLP channel, 1 per score, which matches the 0.13 GB per image measured at micro-batches of 2 and 4.
    """
    t = cfg.num_patches + cfg.num_prefix_tokens
    width, mlp, score = (9, 2, 1) if amp_level == "bf16" else (18, 5, 6)
    per_layer = t * (width * cfg.embed_dim + mlp * cfg.mlp_dim) + score * cfg.num_heads * t * t
    return 4 * cfg.num_layers * per_layer


# Micro-batch activations above this are slower on CPU, not only larger (bench/NOTES.md, attempt 13).
CPU_MICRO_BATCH_BYTES = 1 << 30


def auto_accum_steps(cfg: ViTConfig, per_process_batch: int, device: str, amp_level: str = "O0") -> int:
    """Micro-batches per optimizer step when accum_steps is 0 (auto): on CPU, the fewest that keep one
    micro-batch's activations within ``CPU_MICRO_BATCH_BYTES`` (ViT-B/16: micro-batches of 2, of 4 under AMP
    bf16); elsewhere 1."""
    if device != "CPU":
        return 1
    per_image = training_activation_bytes(cfg, amp_level)
    for steps in range(1, per_process_batch + 1):
        if per_process_batch % steps == 0 and per_process_batch // steps * per_image <= CPU_MICRO_BATCH_BYTES:
            return steps
    return per_process_batch


@dataclass(frozen=True)
class Batching:
    """How the images of one optimizer step split: ``per_rank_batch`` on each process, taken as ``accum_steps``
    micro-batches of ``micro_batch`` images (one call of the training cell each)."""

    per_rank_batch: int
    accum_steps: int
    micro_batch: int
    steps_per_epoch: int | None = None  # optimizer steps per epoch on each process; None: the images were not given


def batching(data, world: int = 1, *, model: ViTConfig | None = None, device: str = "", images: int | None = None,
             where: str = "", amp_level: str = "O0") -> Batching:
    """How ``data.batch_size`` images per optimizer step split over ``world`` processes and ``data.accum_steps``
    micro-batches, and, given the number of training ``images``, the optimizer steps of an epoch.

    accum_steps 0 (auto) becomes what ``auto_accum_steps`` picks for ``model`` on ``device`` at ``amp_level``, or 1 (whole batches)
    without a model. An epoch is whole optimizer steps with ``data.drop_remainder`` or with accumulation (a partial
    step would leave gradients in the buffers across the epoch's end); otherwise its last step may be smaller.

    Raises:
        ConfigError: accum_steps does not divide the per-process batch, or ``images`` (in ``where``) fill no step.
    """
    per_rank = data.batch_size // world
    accum = data.accum_steps or (auto_accum_steps(model, per_rank, device, amp_level) if model is not None else 1)
    if per_rank % accum:
        raise ConfigError(f"batch_size {data.batch_size} per process ({per_rank}) must be divisible by "
                          f"accum_steps {accum} (each optimizer step is accum_steps equal micro-batches)")
    steps = None
    if images is not None:
        whole_steps = data.drop_remainder or accum > 1
        steps = (images // world) // per_rank if whole_steps else -(-(images // world) // per_rank)
        if steps < 1:
            raise ConfigError(f"batch_size {data.batch_size} is larger than the {images} training images in {where} "
                              "with drop_remainder: lower --batch_size or add images")
    return Batching(per_rank, accum, per_rank // accum, steps)
