"""Model configuration: one dataclass, the size presets, and override checking.

Field names follow the MindSpore ViT tutorial's constructor (``patch_size``, ``embed_dim``, ``num_layers``,
``num_heads``, ``mlp_dim``); the numeric defaults are the tutorial's too (``nn.LayerNorm`` epsilon 1e-7,
``nn.GELU`` tanh approximation), so ``vit_b_16`` reproduces the tutorial's network exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from .errors import ConfigError

GELU_FORMS = ("tanh", "erf")
POOLS = ("cls", "mean", "cls_mean")
PATCH_IMPLS = ("matmul", "conv")
GELU_IMPLS = ("auto", "kernel", "elementwise")
NORM_IMPLS = ("auto", "kernel", "gemv")
FINETUNE_MODES = ("full", "linear", "frozen", "lora")
AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment", "autoaugment")
LORA_TARGETS = ("qkv", "proj", "mlp")


@dataclass
class ViTConfig:
    """Everything that defines a ViT's architecture and numerics.

    Attributes:
        image_size: input side in pixels; must be divisible by ``patch_size``.
        patch_size: side of a square patch.
        in_channels: image channels.
        embed_dim: token width.
        num_layers: encoder blocks.
        num_heads: attention heads; must divide ``embed_dim``.
        mlp_dim: hidden width of each block's feed-forward.
        num_classes: classifier outputs.
        drop_rate: dropout after the position embedding, in the feed-forward and before the head.
        attention_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        layer_norm_eps: LayerNorm epsilon (tutorial/MindSpore 1e-7, timm 1e-6, HF 1e-12).
        gelu: "tanh" (MindSpore's nn.GELU default, the tutorial) or "erf" (exact, timm and HF).
        pool: the head's input: "cls" (class token, the tutorial), "mean" (mean of the patch tokens) or "cls_mean"
            (both, concatenated: DINOv2's linear evaluation and transformers' Dinov2ForImageClassification).
        layer_scale: LayerScale's initial value (CaiT, DINOv2): each block's attention and MLP outputs are multiplied
            by a learned per-channel gamma before the residual add. 0: no LayerScale (the tutorial's tree).
        num_register_tokens: learned register tokens (DINOv2 with registers) placed after the class token, after the
            position embedding is added; they have no position and never reach the head.
        patch_impl: "matmul" (patches reshaped and multiplied by the conv kernel: same weights, same result, and
            MindSpore's CPU back-end runs a MatMul far faster than a strided Conv2d) or "conv" (the tutorial's Conv2d).
        gelu_impl: how the tanh-form GELU runs: "kernel" (MindSpore's nn.GELU), "elementwise" (the same function as
            x * sigmoid(2c(x + 0.044715 x^3)), within 1e-6, faster on CPU), or "auto" (elementwise on CPU).
        norm_impl: the LayerNorm backward: "kernel" (MindSpore's LayerNormGrad), "gemv" (written out, every sum a
            matrix-vector product: faster on CPU, at the cost of more memory), or "auto" (gemv on CPU). The forward
            is MindSpore's kernel either way. bench/NOTES.md has the measurements behind each choice.
        token_learner_tokens: S > 0 inserts TokenLearner V1.1 (ms_vit.token_learner): the later blocks see the class
            token and S learned tokens instead of every patch token. 0: off.
        token_learner_layer: TokenLearner goes after this many blocks (0: half of num_layers, as seed 002 does).
        token_learner_bottleneck: hidden width of TokenLearner's (and TokenFuser's) scoring MLP.
        token_fuser: after the last block, map the S tokens back onto the patch positions (TokenFuser); needs
            pool "mean", since the class token does not pass through it.
    """

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-7
    gelu: str = "tanh"
    pool: str = "cls"
    layer_scale: float = 0.0
    num_register_tokens: int = 0
    patch_impl: str = "matmul"
    gelu_impl: str = "auto"
    norm_impl: str = "auto"
    token_learner_tokens: int = 0
    token_learner_layer: int = 0
    token_learner_bottleneck: int = 64
    token_fuser: bool = False

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "embed_dim", "num_layers", "num_heads", "mlp_dim",
                     "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model option {name} must be a positive integer, got {value!r}")
        for name in ("drop_rate", "attention_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"model option {name} must be in [0, 1), got {value!r}")
        if not float(self.layer_norm_eps) > 0:
            raise ConfigError(f"model option layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not float(self.layer_scale) >= 0:
            raise ConfigError(f"model option layer_scale must be >= 0 (0: no LayerScale), got {self.layer_scale!r}")
        for name in ("token_learner_tokens", "token_learner_layer", "num_register_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"model option {name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.token_learner_tokens and not 1 <= self.learner_after < self.num_layers:
            raise ConfigError(f"token_learner_layer {self.token_learner_layer} must leave at least one block on each "
                              f"side of TokenLearner: 1 .. {self.num_layers - 1} (0: half of num_layers)")
        if self.token_learner_tokens and self.num_register_tokens:
            raise ConfigError("TokenLearner with register tokens: TokenLearner pools the patch tokens, which it finds "
                              "after the class token only; set token_learner_tokens 0 or num_register_tokens 0")
        if self.token_fuser and not self.token_learner_tokens:
            raise ConfigError("token_fuser needs TokenLearner: set token_learner_tokens too")
        if self.token_fuser and self.pool != "mean":
            raise ConfigError("token_fuser with pool 'cls': the fused patch tokens would never reach the classifier; "
                              "set pool 'mean'")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}: "
                              f"use a multiple of {self.patch_size}, e.g. {self.image_size // self.patch_size * self.patch_size or self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"num_heads {self.num_heads} does not divide embed_dim {self.embed_dim}")
        for name, allowed in (("gelu", GELU_FORMS), ("pool", POOLS), ("patch_impl", PATCH_IMPLS),
                              ("gelu_impl", GELU_IMPLS), ("norm_impl", NORM_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model option {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def learner_after(self) -> int:
        """Blocks before TokenLearner (0 when it is off)."""
        if not self.token_learner_tokens:
            return 0
        return self.token_learner_layer or self.num_layers // 2

    @property
    def num_parameters(self) -> int:
        """Parameter count, from the architecture alone (equals the built Cell's)."""
        d, c, p = self.embed_dim, self.in_channels, self.patch_size
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * self.mlp_dim + self.mlp_dim) + (self.mlp_dim * d + d)
        embed = c * p * p * d + d + d + (self.num_patches + 1) * d
        s, b = self.token_learner_tokens, self.token_learner_bottleneck
        scorer = 2 * d + d * b + b + b * s + s
        learner = (scorer if s else 0) + (4 * d + s * s + s + scorer if self.token_fuser else 0)
        block += 2 * d if self.layer_scale else 0
        embed += self.num_register_tokens * d
        return embed + self.num_layers * block + learner + 2 * d + self.head_dim * self.num_classes + self.num_classes

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and the registers."""
        return 1 + self.num_register_tokens

    @property
    def head_dim(self) -> int:
        """Width of the head's input: the token width, twice that for pool "cls_mean"."""
        return self.embed_dim * (2 if self.pool == "cls_mean" else 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _preset(patch: int, dim: int, layers: int, heads: int, mlp: int) -> dict:
    return {"patch_size": patch, "embed_dim": dim, "num_layers": layers, "num_heads": heads, "mlp_dim": mlp}


def _dinov2(dim: int, layers: int, heads: int, registers: int = 0) -> dict:
    """DINOv2 (Oquab et al., 2023): patch 14, LayerScale, exact GELU, eps 1e-6, and the class token with the mean
    patch token as the head's input (its linear evaluation). Trained at 518 px; the presets run at 224, the position
    grid resized when weights load."""
    return {**_preset(14, dim, layers, heads, 4 * dim), "layer_scale": 1e-5, "gelu": "erf", "layer_norm_eps": 1e-6,
            "pool": "cls_mean", "num_register_tokens": registers}


# The sizes of the ViT paper (Table 1) and DeiT (Ti, S); DINOv2's S/B/L with and without 4 registers (giant's SwiGLU
# MLP is not implemented); `vit_tiny_test` is for tests and demos.
PRESETS: dict[str, dict] = {
    "vit_ti_16": _preset(16, 192, 12, 3, 768),
    "vit_s_16": _preset(16, 384, 12, 6, 1536),
    "vit_b_16": _preset(16, 768, 12, 12, 3072),
    "vit_b_32": _preset(32, 768, 12, 12, 3072),
    "vit_l_16": _preset(16, 1024, 24, 16, 4096),
    "vit_l_32": _preset(32, 1024, 24, 16, 4096),
    "dinov2_s14": _dinov2(384, 12, 6),
    "dinov2_b14": _dinov2(768, 12, 12),
    "dinov2_l14": _dinov2(1024, 24, 16),
    "dinov2_s14_reg": _dinov2(384, 12, 6, 4),
    "dinov2_b14_reg": _dinov2(768, 12, 12, 4),
    "dinov2_l14_reg": _dinov2(1024, 24, 16, 4),
    "vit_tiny_test": {**_preset(8, 32, 2, 4, 64), "image_size": 32, "num_classes": 10},
}

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(ViTConfig))


def check_keys(keys, allowed, what: str) -> None:
    """Raise a ConfigError naming the first unknown key and the closest allowed one."""
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; allowed: {', '.join(sorted(allowed))}"
            raise ConfigError(f"unknown {what} {key!r}{hint}")


def model_config(name: str = "vit_b_16", **overrides) -> ViTConfig:
    """The ViTConfig of a preset with keyword overrides (unknown keys are an error naming the key)."""
    if name not in PRESETS:
        check_keys([name], PRESETS, "model name")
    check_keys(overrides, CONFIG_FIELDS, "model option")
    return ViTConfig(**{**PRESETS[name], **overrides})


# ImageNet statistics in 0..255 pixel units (the tutorial's Normalize).
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


@dataclass
class TrainConfig:
    """A fine-tuning run. YAML files under configs/ fill it; ``--key value`` on the command line overrides it.

    The defaults are the MindSpore tutorial's recipe for ViT-B/16 on its ImageNet subset.
    """

    # model
    model: str = ""  # preset name (ms_vit.PRESETS); "": the architecture the pretrained weights describe, else vit_b_16
    image_size: int = 224
    patch_size: int = 0  # 0: the preset's; likewise embed_dim, num_layers, num_heads, mlp_dim
    embed_dim: int = 0
    num_layers: int = 0
    num_heads: int = 0
    mlp_dim: int = 0
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    token_learner_tokens: int = 0  # > 0: TokenLearner V1.1 with this many tokens (ms_vit.token_learner)
    token_learner_layer: int = 0  # after this many blocks (0: half of them)
    token_fuser: bool = False  # map the learned tokens back onto the patches after the last block (needs pool mean)
    pool: str = ""  # head input: cls (class token), mean (of the patch tokens), cls_mean (both); "": the weights' or preset's
    num_register_tokens: int = 0  # DINOv2 register tokens (0: the weights' or preset's; must match the weights)
    gelu: str = ""  # tanh or erf ("": the pretrained weights' form, else the preset's tanh)
    layer_norm_eps: float = 0.0  # LayerNorm epsilon (0: the pretrained weights', else the preset's 1e-7)
    norm_impl: str = ""  # LayerNorm backward: gemv (faster on CPU, more memory), kernel ("": gemv on CPU only)
    pretrained: str = ""  # checkpoint path or URL ("" trains from scratch)
    pretrained_sha256: str = ""  # expected SHA-256 of a downloaded checkpoint ("" = not checked)
    strict_head: bool = False  # refuse a pretrained head with another class count instead of re-initialising it
    # data
    dataset: str = "folder"  # folder: data_dir holds train/ and val/ class folders; cifar10: CIFAR-10 binary files
    data_dir: str = ""  # folder with train/ and val/ class folders (or the CIFAR-10 .bin files)
    dataset_url: str = ""  # zip/tar fetched into dataset/ and unpacked when data_dir does not exist
    dataset_sha256: str = ""
    demo_data: bool = False  # generate the offline shapes data set into data_dir when it is missing
    batch_size: int = 16
    accum_steps: int = 0  # micro-batches per optimizer step (same update, less memory); 0: auto (CPU: by memory, else 1)
    drop_remainder: bool = True
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])  # RandomCropDecodeResize area range
    crop_ratio: list = field(default_factory=lambda: [0.75, 1.333])
    hflip: float = 0.5
    # Preprocessing: unset (0, [], "") follows the pretrained weights (README "Weights from elsewhere"), else ImageNet's.
    crop_pct: float = 0.0  # eval: resize to image_size / crop_pct, centre-crop image_size (0: the weights', else 0.875)
    mean: list = field(default_factory=list)  # per-channel mean, 0-255 pixels ([]: the weights', else ImageNet's)
    std: list = field(default_factory=list)  # per-channel std, 0-255 pixels ([]: the weights', else ImageNet's)
    interpolation: str = ""  # resize: bilinear or bicubic ("": the weights', else bilinear)
    num_workers: int = 0  # 0: from the core count
    bad_images: str = "fail"  # unreadable images: fail before training starts, or skip them (and count them)
    # optimisation
    epochs: int = 10
    optimizer: str = "adam"  # adam, adamw, sgd
    lr: float = 5e-5
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # never applied to biases, LayerNorm, LayerScale, class and register tokens, positions
    layer_decay: float = 1.0  # layer-wise LR decay (< 1 gives lower layers smaller rates)
    clip_grad_norm: float = 0.0  # 0: no clipping
    label_smoothing: float = 0.1
    # what trains (README "Choosing a mode")
    finetune_mode: str = "full"  # full, linear (the head, on cached backbone features), frozen (freeze_blocks fixed), lora
    freeze_blocks: int = 0  # frozen: the first N blocks stay fixed, with the patch embedding and the tokens
    lora_rank: int = 8  # lora: adapter rank
    lora_alpha: float = 16.0  # lora: the update is scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # lora: dropout on the adapters' input
    lora_targets: list = field(default_factory=lambda: ["qkv", "proj"])  # lora: qkv, proj (attention), mlp (both MLP layers)
    # augmentation and regularisation beyond crop and flip (timm's names)
    auto_augment: str = "none"  # none, randaugment, trivialaugment, autoaugment (mindspore.dataset.vision's)
    aa_magnitude: int = 9  # randaugment: magnitude of each op (0..30, bins of 31)
    aa_num_ops: int = 2  # randaugment: ops per image
    color_jitter: float = 0.0  # brightness, contrast and saturation drawn from [1 - x, 1 + x] (0: off)
    random_erasing: float = 0.0  # probability of erasing a random rectangle of the normalised image (0: off)
    mixup_alpha: float = 0.0  # mixup's Beta(alpha, alpha) (0: off)
    cutmix_alpha: float = 0.0  # cutmix's Beta(alpha, alpha) (0: off)
    mixup_prob: float = 1.0  # probability that a batch is mixed
    mixup_switch_prob: float = 0.5  # with both on: probability of cutmix rather than mixup
    mixup_off_epoch: int = 0  # epochs after this one train on plain labels (0: mix to the end)
    ema_decay: float = 0.0  # exponential moving average of the weights, validated beside them (0: off; e.g. 0.9998)
    # run
    output_dir: str = "outputs/run"
    device_target: str = ""  # Ascend, GPU, CPU ("" = what MindSpore finds)
    device_num: int = 1  # > 1: data-parallel processes launched with msrun (run_finetune.sh)
    amp_level: str = "auto"  # auto: O2 on Ascend/GPU, O0 on CPU
    loss_scale: float = 0.0  # 0: dynamic loss scaling under O2 (none under O0); > 0: a fixed scale
    mode: str = "graph"
    seed: int = 0
    keep_checkpoints: int = 2  # last N epoch checkpoints kept beside best.ckpt
    resume: bool = False  # continue from output_dir's last checkpoint
    log_every: int = 10  # progress line every N steps
    tensorboard: bool = False  # also write the scalars as TensorBoard events into output_dir/tensorboard (tensorboardX)
    compile_cache: bool = True  # keep compiled graphs in output_dir/compile_cache/<key>: a resumed run starts sooner

    def __post_init__(self) -> None:
        positive = ("image_size", "batch_size", "epochs", "device_num", "keep_checkpoints", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad_norm", "loss_scale", "num_workers",
                     "accum_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("freeze_blocks", "aa_magnitude", "aa_num_ops", "mixup_off_epoch", "mixup_alpha", "cutmix_alpha",
                     "color_jitter", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        self._check_modes()
        if self.lr == 0:
            raise ConfigError("lr must be positive, got 0")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        choices = {"optimizer": ("adam", "adamw", "sgd"), "amp_level": ("auto", "O0", "O1", "O2", "O3"),
                   "device_target": ("", "Ascend", "GPU", "CPU"), "mode": ("graph", "pynative"),
                   "bad_images": ("fail", "skip"), "dataset": ("folder", "cifar10"),
                   "finetune_mode": FINETUNE_MODES, "auto_augment": AUTO_AUGMENTS, "norm_impl": ("",) + NORM_IMPLS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(a or repr(a) for a in allowed)}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ConfigError(f"{name} must be two increasing positive numbers, got {value}")
        if len(self.mean) not in (0, 3) or len(self.std) not in (0, 3) or min(self.std, default=1) <= 0:
            raise ConfigError(f"mean and std need 3 values each (0-255 pixels), std positive, or none to follow the "
                              f"pretrained weights; got {self.mean}, {self.std}")
        for name, allowed in (("interpolation", ("", "bilinear", "bicubic")), ("gelu", ("", *GELU_FORMS))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed[1:])} (or empty: from the pretrained "
                                  f"weights), got {getattr(self, name)!r}")
        for name in ("crop_pct", "layer_norm_eps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative (0: from the pretrained weights), got "
                                  f"{getattr(self, name)}")

    def _check_modes(self) -> None:
        """The fine-tuning mode's keys, and the augmentation ranges (README "Choosing a mode")."""
        if self.finetune_mode not in FINETUNE_MODES:
            raise ConfigError(f"finetune_mode must be one of {', '.join(FINETUNE_MODES)}, got {self.finetune_mode!r}")
        if self.finetune_mode == "linear" and not self.pretrained:
            raise ConfigError("finetune_mode linear trains only the head on the backbone's features, which needs "
                              "pretrained weights: give --pretrained CKPT, or use finetune_mode full")
        # Without a preset the depth is the weights' (checked once they are read), or vit_b_16's without weights.
        model = self.model or ("" if self.pretrained else "vit_b_16")
        depth = self.num_layers or PRESETS.get(model, {}).get("num_layers", 0)
        if depth and self.freeze_blocks > depth:
            raise ConfigError(f"freeze_blocks {self.freeze_blocks} is more than the model's {depth} blocks: use 0 .. "
                              f"{depth}")
        if self.freeze_blocks and self.finetune_mode != "frozen":
            raise ConfigError(f"freeze_blocks applies to finetune_mode frozen, not {self.finetune_mode}: add "
                              "--finetune_mode frozen or drop freeze_blocks")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be a positive integer (8 is usual), got {self.lora_rank!r}")
        if self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_alpha must be positive and lora_dropout in [0, 1), got {self.lora_alpha}, "
                              f"{self.lora_dropout}")
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if unknown or not self.lora_targets:
            raise ConfigError(f"lora_targets must be some of {', '.join(LORA_TARGETS)} (qkv and proj: the attention's "
                              f"projections; mlp: both MLP layers), got {self.lora_targets}")
        if self.aa_magnitude > 30:
            raise ConfigError(f"aa_magnitude must be in 0 .. 30, got {self.aa_magnitude}")
        for name in ("random_erasing", "mixup_prob", "mixup_switch_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} is a probability: it must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1) (0: off; 0.9998 is usual), got {self.ema_decay}")

    def model_overrides(self) -> dict:
        """The ViTConfig options this run sets (0 or "" means: keep the preset's, or for gelu and layer_norm_eps the
        pretrained weights')."""
        keys = ("image_size", "patch_size", "embed_dim", "num_layers", "num_heads", "mlp_dim", "drop_rate",
                "attention_drop_rate", "drop_path_rate", "token_learner_tokens", "token_learner_layer", "token_fuser",
                "pool", "gelu", "layer_norm_eps", "norm_impl", "num_register_tokens")
        return {k: getattr(self, k) for k in keys if getattr(self, k) not in (0, "") or k.endswith("rate")}

    def preprocess_overrides(self) -> dict:
        """The preprocessing keys this run sets (mean, std, interpolation, crop_pct); the others follow the
        pretrained weights (``checkpoint.pretrained_cfg.resolve_preprocess``)."""
        return {k: getattr(self, k) for k in ("mean", "std", "interpolation", "crop_pct")
                if getattr(self, k) not in (0, 0.0, "", [])}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def read_yaml(path: str) -> dict:
    """A YAML mapping of TrainConfig keys; unknown keys are an error naming the key and the file."""
    import os

    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist: see configs/ for the recipes")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    check_keys(data, TRAIN_FIELDS, f"key in {path}")
    return data


def make_train_config(values: dict) -> TrainConfig:
    """Build a TrainConfig from plain values, converting types and naming any key that does not fit."""
    check_keys(values, TRAIN_FIELDS, "config key")
    converted = {}
    for key, value in values.items():
        default = TRAIN_FIELDS[key].default
        kind = list if default is dataclasses.MISSING else type(default)
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif kind is list:
                items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
                words = any(isinstance(v, str) for v in TRAIN_FIELDS[key].default_factory())
                value = [str(v) for v in items] if words else [float(v) for v in items]
            elif value is None:
                value = "" if kind is str else value
            else:
                value = kind(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key {key} needs a {kind.__name__}, got {value!r}") from err
        converted[key] = value
    return TrainConfig(**converted)
