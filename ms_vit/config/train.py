"""The fine-tuning run's keys, each declared once: type and default (the field), section, help, valid values, and
whether it shapes the compiled graph. ``--help``, validation, docs/keys.md, the README's key list and the compile
cache's key all come from these declarations.

A new key is one ``key(...)`` line in ``TrainConfig``, in its section; the module that uses it reads it from
``cfg.section(...)`` (or the whole config, for the run itself). ``python -m ms_vit.config.document --write``
regenerates docs/keys.md and the README's list; tests/test_schema.py fails while they are stale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType

from ms_vit.config.model import GELU_FORMS, NORM_IMPLS, POOLS, PRESETS, check_keys
from ms_vit.errors import ConfigError

SECTIONS = {
    "model": "the network: preset, size overrides, regularisation, numerics, pretrained weights",
    "data": "where the images come from and how they are batched",
    "preprocess": "resize, crop and normalisation; unset values follow the pretrained weights, else ImageNet's",
    "augment": "training-image augmentation and batch mixing (timm's names)",
    "optim": "optimiser, schedule and loss",
    "finetune": "what trains: the whole network, the head, the upper blocks or LoRA adapters",
    "run": "device, precision, outputs, resuming and logging",
}
FINETUNE_MODES = ("full", "linear", "frozen", "lora")
AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment", "autoaugment")
LORA_TARGETS = ("qkv", "proj", "mlp")
CLASS_BALANCES = ("none", "sampler", "loss")
CLASS_WEIGHTINGS = ("inverse", "sqrt")

# Keys that no longer exist, with what replaces them: named in the error instead of "unknown key".
DEAD_KEYS = {
    "device_num": "it is the launcher's option, not a training key: bash run_finetune.sh --device_num N starts N "
                  "processes (scripts/train.py is one process)",
}

# run_finetune.sh's own options and environment variables: listed by --help and docs/keys.md, never reach Python.
LAUNCHER = (
    ("--device_num N", "data-parallel processes on this machine, launched with msrun (default 1)"),
    ("--node_num M", "machines in the job (default 1); run the same command on each"),
    ("--node_rank R", "this machine's index, 0 .. node_num - 1; 0 on the master (default 0)"),
    ("--master_addr HOST", "the master machine's address (default 127.0.0.1)"),
    ("--master_port P", "the master's port (default $MASTER_PORT, else 8118)"),
    ("PYTHON", "environment: the interpreter that runs training (default python)"),
    ("CLUSTER_TIMEOUT", "environment: seconds a node waits for the master (msrun --cluster_time_out, default 300)"),
)


@dataclass(frozen=True)
class Key:
    """What the schema knows about a key beyond its type and default."""

    section: str
    help: str
    choices: tuple = ()
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    graph: bool = True  # False: the key changes where a run writes or what it prints, never a compiled graph
    inherit: str = ""  # what the key's empty value (0, "", [], false) means; "": it is an ordinary value

    def valid_values(self) -> str:
        """The valid values in words: choices or a range."""
        if self.choices:
            return ", ".join(str(c) for c in self.choices if c != "")
        if self.low is None and self.high is None:
            return ""
        low = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        high = "∞)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{low or '(-∞'}, {high}"


def key(default, section: str, help: str, **spec) -> dataclasses.Field:
    """A TrainConfig field with its schema entry (``Key``) in the field's metadata."""
    meta = MappingProxyType({"key": Key(section, help, **spec)})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


WEIGHTS_OR_PRESET = "the pretrained weights', else the preset's"


@dataclass
class TrainConfig:
    """A fine-tuning run. YAML files under configs/ fill it; ``--key value`` on the command line overrides it.

    The defaults are the MindSpore tutorial's recipe for ViT-B/16 on its ImageNet subset.
    """

    # model: the ViTConfig keys here keep their ViTConfig names (model_overrides passes them on)
    model: str = key("", "model", "preset name", choices=("",) + tuple(PRESETS),
                     inherit="the architecture the pretrained weights describe, else vit_b_16")
    image_size: int = key(224, "model", "input side in pixels (a multiple of the patch size)", low=1)
    patch_size: int = key(0, "model", "side of a square patch in pixels", low=0, inherit=WEIGHTS_OR_PRESET)
    embed_dim: int = key(0, "model", "token width (channels per token)", low=0, inherit=WEIGHTS_OR_PRESET)
    num_layers: int = key(0, "model", "number of encoder blocks", low=0, inherit=WEIGHTS_OR_PRESET)
    num_heads: int = key(0, "model", "number of attention heads", low=0, inherit=WEIGHTS_OR_PRESET)
    mlp_dim: int = key(0, "model", "hidden width of each block's MLP", low=0, inherit=WEIGHTS_OR_PRESET)
    drop_rate: float = key(0.0, "model", "dropout after the position embedding, in the MLP and before the head",
                           low=0, high=1, high_open=True)
    attention_drop_rate: float = key(0.0, "model", "dropout on the attention probabilities", low=0, high=1,
                                     high_open=True)
    drop_path_rate: float = key(0.0, "model", "stochastic depth, rising linearly over the blocks to this value",
                                low=0, high=1, high_open=True)
    token_learner_tokens: int = key(0, "model", "TokenLearner V1.1 with this many tokens (ms_vit.models.token_learner)",
                                    low=0, inherit="off (or the weights')")
    token_learner_layer: int = key(0, "model", "TokenLearner goes after this many blocks", low=0,
                                   inherit="half of the blocks")
    token_fuser: bool = key(False, "model", "map the learned tokens back onto the patches after the last block "
                                            "(needs pool mean)", inherit="off (or the weights')")
    pool: str = key("", "model", "the head's input: class token, mean of the patch tokens, or both",
                    choices=("",) + POOLS, inherit=WEIGHTS_OR_PRESET)
    num_register_tokens: int = key(0, "model", "DINOv2 register tokens (must match the weights)", low=0,
                                   inherit=WEIGHTS_OR_PRESET)
    gelu: str = key("", "model", "the GELU formula", choices=("",) + GELU_FORMS,
                    inherit="the pretrained weights' form, else tanh")
    layer_norm_eps: float = key(0.0, "model", "LayerNorm epsilon", low=0, inherit="the pretrained weights', else 1e-7")
    norm_impl: str = key("", "model", "LayerNorm: auto (on CPU ms_vit's C++ kernel, else gemv), gemv (MindSpore's "
                         "forward, GEMV backward) or MindSpore's kernel", choices=("",) + NORM_IMPLS,
                         inherit="auto: C++ on CPU where it builds, the kernel elsewhere")
    pretrained: str = key("", "model", "weights: a file, folder, URL or hf-hub:ORG/NAME[@REV]", graph=False,
                          inherit="train from scratch")
    pretrained_sha256: str = key("", "model", "expected SHA-256 of a downloaded checkpoint", graph=False,
                                 inherit="not checked")
    strict_head: bool = key(False, "model", "refuse a pretrained head with another class count instead of "
                                            "re-initialising it")
    # data
    dataset: str = key("folder", "data", "folder: data_dir holds train/ and val/ class folders; cifar10: the "
                                         "CIFAR-10 binary files", choices=("folder", "cifar10"))
    data_dir: str = key("", "data", "folder with train/ and val/ class folders (or the CIFAR-10 .bin files)",
                        graph=False, inherit="dataset_url's download, or the demo with demo_data")
    dataset_url: str = key("", "data", "zip or tar fetched into dataset/ and unpacked when no data_dir is given (or "
                                       "data_dir lies in the download's folder and does not exist yet)",
                           graph=False, inherit="no download")
    dataset_sha256: str = key("", "data", "expected SHA-256 of dataset_url's file", graph=False, inherit="not checked")
    demo_data: bool = key(False, "data", "generate the offline shapes data set into data_dir when it is missing",
                          graph=False)
    batch_size: int = key(16, "data", "images per optimiser step, over all processes", low=1)
    accum_steps: int = key(0, "data", "micro-batches per optimiser step (the same update with less memory)", low=0,
                           inherit="by memory on CPU, else 1")
    drop_remainder: bool = key(True, "data", "drop each epoch's last incomplete batch")
    num_workers: int = key(0, "data", "processes that decode images", low=0, graph=False, inherit="from the core count")
    bad_images: str = key("fail", "data", "unreadable images: fail before training starts, or skip (and count) them",
                          choices=("fail", "skip"), graph=False)
    class_balance: str = key("none", "data", "imbalanced classes: sampler draws each epoch's images with replacement, "
                                             "each with its class's weight; loss weights each image's cross-entropy "
                                             "by its class's weight", choices=CLASS_BALANCES)
    class_balance_weights: str = key("inverse", "data", "class_balance's class weights: inverse (1 / images of the "
                                                        "class: every class equally often) or sqrt (1 / its square "
                                                        "root: half way, on a log scale)", choices=CLASS_WEIGHTINGS)
    # preprocess
    crop_pct: float = key(0.0, "preprocess", "evaluation: resize to image_size / crop_pct, centre-crop image_size",
                          low=0, inherit="the weights', else 0.875")
    mean: list = key([], "preprocess", "per-channel mean, 0-255 pixels (3 values)", inherit="the weights', else "
                                                                                             "ImageNet's")
    std: list = key([], "preprocess", "per-channel std, 0-255 pixels (3 positive values)",
                    inherit="the weights', else ImageNet's")
    interpolation: str = key("", "preprocess", "resize filter", choices=("", "bilinear", "bicubic"),
                             inherit="the weights', else bilinear")
    # augment
    crop_scale: list = key([0.08, 1.0], "augment", "random-resized-crop area range (two increasing numbers in (0, 1])")
    crop_ratio: list = key([0.75, 1.333], "augment", "random-resized-crop aspect-ratio range (two increasing numbers)")
    hflip: float = key(0.5, "augment", "probability of a horizontal flip", low=0, high=1)
    auto_augment: str = key("none", "augment", "automatic augmentation policy (mindspore.dataset.vision's)",
                            choices=AUTO_AUGMENTS)
    aa_magnitude: int = key(9, "augment", "randaugment: magnitude of each op (bins of 31)", low=0, high=30)
    aa_num_ops: int = key(2, "augment", "randaugment: ops per image", low=0)
    color_jitter: float = key(0.0, "augment", "brightness, contrast and saturation drawn from [1 - x, 1 + x] "
                                              "(not with auto_augment, as in timm)", low=0, inherit="off")
    random_erasing: float = key(0.0, "augment", "probability of erasing a random rectangle of the normalised image",
                                low=0, high=1, inherit="off")
    mixup_alpha: float = key(0.0, "augment", "mixup's Beta(alpha, alpha)", low=0, inherit="off")
    cutmix_alpha: float = key(0.0, "augment", "cutmix's Beta(alpha, alpha)", low=0, inherit="off")
    mixup_prob: float = key(1.0, "augment", "probability that a batch is mixed", low=0, high=1)
    mixup_switch_prob: float = key(0.5, "augment", "with both on: probability of cutmix rather than mixup", low=0,
                                   high=1)
    mixup_off_epoch: int = key(0, "augment", "epochs after this one train on plain labels", low=0,
                               inherit="mix to the end")
    # optim
    epochs: int = key(10, "optim", "number of training epochs", low=1)
    optimizer: str = key("adam", "optim", "the optimiser", choices=("adam", "adamw", "sgd"))
    lr: float = key(5e-5, "optim", "peak learning rate", low=0, low_open=True)
    min_lr: float = key(0.0, "optim", "learning rate at the end of the cosine schedule", low=0)
    warmup_epochs: float = key(0.0, "optim", "linear warm-up from 0 over this many epochs", low=0)
    beta1: float = key(0.9, "optim", "adam, adamw: first-moment decay", low=0, high=1, high_open=True)
    beta2: float = key(0.999, "optim", "adam, adamw: second-moment decay", low=0, high=1, high_open=True)
    momentum: float = key(0.9, "optim", "sgd: momentum", low=0, high=1, high_open=True)
    weight_decay: float = key(0.0, "optim", "weight decay; never on biases, LayerNorm, LayerScale, tokens and "
                                            "positions", low=0)
    layer_decay: float = key(1.0, "optim", "layer-wise learning-rate decay (< 1: lower blocks learn slower)", low=0,
                             low_open=True, high=1)
    clip_grad_norm: float = key(0.0, "optim", "clip the global gradient norm to this", low=0, inherit="no clipping")
    label_smoothing: float = key(0.1, "optim", "label smoothing of the cross-entropy", low=0, high=1, high_open=True)
    ema_decay: float = key(0.0, "optim", "exponential moving average of the weights, validated beside them "
                                         "(0.9998 is usual)", low=0, high=1, high_open=True, inherit="off")
    # finetune
    finetune_mode: str = key("full", "finetune", "full; linear (the head, on cached backbone features); frozen "
                                                 "(freeze_blocks fixed); lora", choices=FINETUNE_MODES)
    freeze_blocks: int = key(0, "finetune", "frozen: the first N blocks stay fixed, with the patch embedding and the "
                                            "tokens", low=0)
    lora_rank: int = key(8, "finetune", "lora: the adapters' rank", low=1)
    lora_alpha: float = key(16.0, "finetune", "lora: the update is scaled by lora_alpha / lora_rank", low=0,
                            low_open=True)
    lora_dropout: float = key(0.0, "finetune", "lora: dropout on the adapters' input", low=0, high=1, high_open=True)
    lora_targets: list = key(["qkv", "proj"], "finetune", "lora: qkv and proj (the attention's projections), mlp "
                                                          "(both MLP layers)", choices=LORA_TARGETS)
    # run
    output_dir: str = key("outputs/run", "run", "where checkpoints, metrics and curves go", graph=False)
    device_target: str = key("", "run", "the device to run on", choices=("", "Ascend", "GPU", "CPU"),
                             inherit="what MindSpore finds")
    amp_level: str = key("auto", "run", "mixed precision (auto: O2 on Ascend and GPU; on CPU bf16 where the CPU has "
                                        "avx512_bf16 or amx_bf16, else O0)",
                         choices=("auto", "O0", "O1", "O2", "O3", "bf16"))
    loss_scale: float = key(0.0, "run", "a fixed loss scale", low=0, inherit="dynamic under O2, none under O0")
    mode: str = key("graph", "run", "MindSpore execution mode", choices=("graph", "pynative"))
    seed: int = key(0, "run", "seed of the initialisation, the sampling and the augmentation")
    keep_checkpoints: int = key(2, "run", "last N epoch checkpoints kept beside best.ckpt", low=1, graph=False)
    resume: bool = key(False, "run", "continue from output_dir's last checkpoint", graph=False)
    log_every: int = key(10, "run", "a progress line every N steps", low=1, graph=False)
    tensorboard: bool = key(False, "run", "also write the scalars as TensorBoard events into output_dir/tensorboard "
                                          "(tensorboardX)", graph=False)
    compile_cache: bool = key(True, "run", "keep compiled graphs in output_dir/compile_cache/<key>: a resumed run "
                                           "starts sooner", graph=False)

    def __post_init__(self) -> None:
        for name, f in TRAIN_FIELDS.items():
            _check_value(name, getattr(self, name), f.metadata["key"])
        self._check_combinations()

    def _check_combinations(self) -> None:
        """What one key's declaration cannot say: rules that involve several keys."""
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
        if self.class_balance == "sampler" and self.dataset == "cifar10":
            raise ConfigError("class_balance sampler draws from class folders (dataset folder); CIFAR-10's training "
                              "classes are balanced already: use class_balance none (or loss)")
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ConfigError(f"{name} must be two increasing positive numbers, got {value}")
        if len(self.mean) not in (0, 3) or len(self.std) not in (0, 3) or min(self.std, default=1) <= 0:
            raise ConfigError(f"mean and std need 3 values each (0-255 pixels), std positive, or none to follow the "
                              f"pretrained weights; got {self.mean}, {self.std}")

    def section(self, name: str):
        """The keys of one section (``SECTIONS``) as a frozen dataclass: what a module that owns the section gets."""
        return SECTION_TYPES[name](**{k: getattr(self, k) for k in SECTION_KEYS[name]})

    def is_set(self, name: str) -> bool:
        """False when a key holds its empty value and that value means "inherit" (``Key.inherit``)."""
        spec = TRAIN_FIELDS[name].metadata["key"]
        return not spec.inherit or getattr(self, name) not in (0, "", [], False)

    def model_overrides(self) -> dict:
        """The ViTConfig options this run sets; the others come from the weights or the preset."""
        from ms_vit.config.model import CONFIG_FIELDS

        return {k: getattr(self, k) for k in SECTION_KEYS["model"] if k in CONFIG_FIELDS and self.is_set(k)}

    def preprocess_overrides(self) -> dict:
        """The preprocessing keys this run sets; the others follow the pretrained weights
        (``checkpoint.pretrained_cfg.resolve_preprocess``)."""
        return {k: getattr(self, k) for k in SECTION_KEYS["preprocess"] if self.is_set(k)}

    def changed(self, section: str) -> list[str]:
        """The keys of ``section`` whose values differ from their defaults."""
        return [k for k in SECTION_KEYS[section] if getattr(self, k) != _default(k)]

    def graph_values(self) -> dict:
        """The keys that shape a compiled graph, with their values (the compile cache's key)."""
        return {k: getattr(self, k) for k, f in TRAIN_FIELDS.items() if f.metadata["key"].graph}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
SECTION_KEYS = {name: tuple(k for k, f in TRAIN_FIELDS.items() if f.metadata["key"].section == name)
                for name in SECTIONS}


def _section_type(name: str) -> type:
    """A frozen dataclass of one section's keys, with their defaults (``AugmentKeys(mixup_alpha=0.8)``)."""
    fields = [(k, TRAIN_FIELDS[k].type, field(default=TRAIN_FIELDS[k].default) if TRAIN_FIELDS[k].default_factory
               is dataclasses.MISSING else field(default_factory=TRAIN_FIELDS[k].default_factory))
              for k in SECTION_KEYS[name]]
    return dataclasses.make_dataclass(f"{name.capitalize()}Keys", fields, frozen=True,
                                      namespace={"__doc__": f"The {name} keys of a TrainConfig: {SECTIONS[name]}."})


SECTION_TYPES = {name: _section_type(name) for name in SECTIONS}
ModelKeys, DataKeys, PreprocessKeys, AugmentKeys, OptimKeys, FinetuneKeys, RunKeys = SECTION_TYPES.values()


def _default(name: str):
    f = TRAIN_FIELDS[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _check_value(name: str, value, spec: Key) -> None:
    """One key against its declaration: type, choices, range."""
    kind = type(_default(name))
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if spec.choices:
        bad = [v for v in (value if kind is list else [value]) if v not in spec.choices]
        if bad or (kind is list and not value):
            what = "some of" if kind is list else "one of"
            unset = f" (or empty: {spec.inherit})" if "" in spec.choices else ""
            raise ConfigError(f"{name} must be {what} {spec.valid_values()}{unset}, got {value!r} ({spec.help})")
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)) or (
            spec.high is not None and (value > spec.high or (spec.high_open and value == spec.high))):
        if spec.high is None and spec.low == 0:
            words = "must be positive" if spec.low_open else "must not be negative"
        elif spec.high is None:
            words = f"must be {'more than' if spec.low_open else 'at least'} {spec.low:g}"
        else:
            words = f"must be in {spec.valid_values()}"
        unset = f"; 0: {spec.inherit}" if spec.inherit and not spec.choices else ""
        raise ConfigError(f"{name} {words}, got {value!r} ({spec.help}{unset})")


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
    check_train_keys(data, f"key in {path}")
    return data


def check_train_keys(keys, what: str = "config key") -> None:
    """Unknown keys fail naming the closest known one; a removed key names what replaces it."""
    for name in keys:
        if name in DEAD_KEYS:
            raise ConfigError(f"{what} {name} was removed: {DEAD_KEYS[name]}")
    check_keys(keys, TRAIN_FIELDS, what)


def make_train_config(values: dict) -> TrainConfig:
    """Build a TrainConfig from plain values, converting types and naming any key that does not fit."""
    check_train_keys(values)
    converted = {}
    for name, value in values.items():
        default = _default(name)
        kind = type(default)
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif kind is list:
                items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
                words = bool(TRAIN_FIELDS[name].metadata["key"].choices)
                value = [str(v) for v in items] if words else [float(v) for v in items]
            elif value is None:
                value = "" if kind is str else value
            elif kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            else:
                value = kind(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key {name} needs a {kind.__name__}, got {value!r}") from err
        converted[name] = value
    return TrainConfig(**converted)
