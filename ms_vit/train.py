"""Fine-tuning: ``fine_tune(cfg)`` runs a TrainConfig; ``main(argv)`` is the command line of run_finetune.sh."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys
import time

from . import compile_cache, data
from .complexity import batching
from .config import TRAIN_FIELDS, TrainConfig, check_keys, make_train_config, read_yaml
from .errors import CheckpointError, ConfigError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _field_help() -> dict:
    """The ``# comment`` after each TrainConfig field, used as its --help text (one place for both)."""
    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if match:
            helps[match.group(1)] = match.group(2)
    return helps


def _default(name: str, values: dict):
    f = TRAIN_FIELDS[name]
    return values.get(name, f.default if f.default is not dataclasses.MISSING else f.default_factory())


def parse_config(argv) -> TrainConfig:
    """``[--config FILE] [--key value ...]`` -> TrainConfig: YAML first, command line over it; unknown keys fail."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default="")
    known, _ = pre.parse_known_args(argv)
    values = read_yaml(known.config) if known.config else {}
    from .cli import Parser

    parser = Parser(
        prog="run_finetune.sh", allow_abbrev=False,
        description="Fine-tune a ViT on an ImageFolder data set (train/ and val/ class folders). Every key of "
                    "the YAML recipe can be given here; the command line wins. Defaults shown are the recipe's.")
    parser.add_argument("--config", default="", help="YAML recipe (see configs/)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    helps = _field_help()
    for name, f in TRAIN_FIELDS.items():
        default = _default(name, values)
        kind = type(default)
        extra = {"nargs": "+"} if kind is list else {"nargs": "?", "const": "true"} if kind is bool else {}
        parser.add_argument(f"--{name}", default=None, metavar=kind.__name__.upper(), **extra,
                            help=f"{helps.get(name, '')} (default: {default!r})")
    args, unknown = parser.parse_known_args(argv)
    for token in unknown:
        key = token[2:].split("=")[0] if token.startswith("--") else token
        check_keys([key], TRAIN_FIELDS, "option")
        raise ConfigError(f"unexpected argument {token!r}: options are --key value")
    overrides = {k: v for k, v in vars(args).items() if k in TRAIN_FIELDS and v is not None}
    return make_train_config({**values, **overrides})


def resolve_data_dir(cfg: TrainConfig, log) -> str:
    """The folder holding train/ and val/: as given, downloaded and unpacked from dataset_url, or generated."""
    from .download import fetch, find_split_root, unpack

    if cfg.demo_data:
        from .demo_data import is_complete, make_shapes_dataset, needs_generation

        root = cfg.data_dir or "dataset/demo"
        if needs_generation(root):  # before the non-empty check: a half-written demo folder is not empty either
            log(f"generating the demo data set (6 shape classes) in {root}")
            return make_shapes_dataset(root)
        if is_complete(root):
            return root
    if cfg.data_dir and os.path.isdir(cfg.data_dir) and os.listdir(cfg.data_dir):
        return cfg.data_dir
    if cfg.dataset == "cifar10" and not cfg.dataset_url:
        from .cifar import find_root

        return find_root(cfg.data_dir or "dataset/cifar-10-batches-bin")  # raises the error that says what to get
    if cfg.dataset_url:
        archive = fetch(cfg.dataset_url, "dataset", cfg.dataset_sha256, log=log)
        stem = os.path.basename(archive).split(".")[0]
        unpacked = unpack(archive, os.path.join("dataset", stem))
        return unpacked if cfg.dataset == "cifar10" else find_split_root(unpacked)
    if not cfg.data_dir:
        raise ConfigError("no data: give --data_dir DIR (with train/ and val/), --dataset_url URL, or run "
                          "--config configs/demo.yaml for the built-in demo")
    data.class_folders(cfg.data_dir)  # raises the right error for a missing path or a file
    raise ConfigError(f"data folder {cfg.data_dir} is empty: it needs train/ and val/ class folders")


class FolderSource:
    """ImageFolder data: ``train/`` and ``val/`` class folders, checked for unreadable images before training."""

    def __init__(self, data_dir: str, cfg: TrainConfig, log):
        self.data_dir = data_dir
        self.train_where, self.val_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "val")
        self.classes = data.train_classes(self.train_where)
        self.train_index = {name: i for i, name in enumerate(self.classes)}
        self.val_index = data.class_indexing(self.val_dir, self.classes)
        self.bad_files = _check_images(data_dir, cfg, log)
        self.n_train = data.count_images(self.train_where, self.train_index) - len(
            [p for p in self.bad_files if p.startswith(self.train_where)])

    def train_data(self, cfg: TrainConfig, epoch: int, rank: int, world: int, skip: int):
        return data.train_dataset(self.train_where, self.train_index, cfg, epoch, rank, world, skip=skip,
                                  exclude_files=self.bad_files)

    def eval_splits(self, cfg: TrainConfig) -> dict:
        """{"train" | "val": (eval-transform batches, labels, files)} over every readable image of each split: the
        linear probe's inputs (``linear_probe.FeatureSource``)."""
        import numpy as np

        splits = {}
        for name, folder, index in (("train", self.train_where, self.train_index), ("val", self.val_dir, self.val_index)):
            files, labels = data.labelled_files(folder, index)
            keep = np.array([i for i, f in enumerate(files) if f not in self.bad_files], np.int64)
            batches = data.eval_dataset(folder, index, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std, cfg.batch_size,
                                        cfg.num_workers, interpolation=cfg.interpolation, sampler_indices=keep)
            splits[name] = (batches, labels[keep], [files[i] for i in keep])
        return splits

    def val_data(self, cfg: TrainConfig, rank: int = 0, world: int = 1):
        from .distributed import shard_indices

        shard = shard_indices(data.count_images(self.val_dir, self.val_index), rank, world) if world > 1 else None
        return data.eval_dataset(self.val_dir, self.val_index, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std,
                                 cfg.batch_size, cfg.num_workers, interpolation=cfg.interpolation,
                                 sampler_indices=shard)


class CifarSource:
    """CIFAR-10 binary files: the five training batches, validated on ``test_batch.bin`` (as seed 000 reports)."""

    def __init__(self, data_dir: str, cfg: TrainConfig, log):
        from . import cifar

        self.root = self.train_where = cifar.find_root(data_dir)
        self.classes = cifar.class_names(self.root)
        self.train_arrays = cifar.read_split(self.root, "train")  # once: every epoch's pipeline reuses it
        self.n_train = len(self.train_arrays[1])
        cifar.split_files(self.root, "test")
        self.bad_files: set = set()

    def train_data(self, cfg: TrainConfig, epoch: int, rank: int, world: int, skip: int):
        from . import cifar

        return cifar.train_dataset(self.root, cfg, epoch, rank, world, skip, arrays=self.train_arrays)

    def eval_splits(self, cfg: TrainConfig) -> dict:
        """As ``FolderSource.eval_splits``: the training and test batches with the eval transform."""
        from . import cifar

        transforms = cifar.eval_transforms(cfg.image_size, cfg.mean, cfg.std)
        splits = {}
        for name, split, arrays in (("train", "train", self.train_arrays), ("val", "test", None)):
            arrays = arrays or cifar.read_split(self.root, split)
            batches = cifar.dataset(self.root, split, transforms, cfg.batch_size,
                                    num_workers=cfg.num_workers or data.default_workers(), arrays=arrays)
            splits[name] = (batches, arrays[1], cifar.split_files(self.root, split))
        return splits

    def val_data(self, cfg: TrainConfig, rank: int = 0, world: int = 1):
        from . import cifar
        from .distributed import shard_indices

        shard = shard_indices(cifar.count(self.root, "test"), rank, world) if world > 1 else None
        return cifar.dataset(self.root, "test", cifar.eval_transforms(cfg.image_size, cfg.mean, cfg.std),
                             cfg.batch_size, num_workers=cfg.num_workers or data.default_workers(),
                             sampler_indices=shard)


def prepare_output(out_dir: str) -> None:
    try:
        os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
        probe = os.path.join(out_dir, f".write_test_{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        raise ConfigError(f"output folder {out_dir} is not writable ({err.strerror}): choose another --output_dir") from err


def resume_state(train_cell, out_dir: str, log, rank: int = 0, world: int = 1) -> dict | None:
    """Load the newest readable epoch checkpoint of ``out_dir`` into the train cell; returns its metadata (None when
    there is nothing to resume).

    In a data-parallel run (``world`` > 1) every process calls this, and only rank 0 reads ``out_dir``: processes
    on other machines need not see that disk. Rank 0's train state (weights, optimizer state, counters) and its
    position (epoch, step_in_epoch, global_step, best_top1) reach the other processes by broadcast; the history
    stays on rank 0, the only process that writes metrics.
    """
    if world == 1:
        return _load_newest_state(train_cell, out_dir, log)
    return _share_resume_state(train_cell, out_dir, log, rank)


def _share_resume_state(train_cell, out_dir: str, log, rank: int) -> dict | None:
    import numpy as np

    from .distributed import broadcast
    from .train_step import is_transient

    header = np.zeros(5)  # found (1), none (0) or failed (-1); epoch, step_in_epoch, global_step, best_top1
    meta = None
    if rank == 0:
        try:
            meta = _load_newest_state(train_cell, out_dir, log)
        except Exception:
            broadcast([np.array([-1.0, 0, 0, 0, 0])])  # the others stop too rather than wait for a state
            raise
        if meta is not None:
            header = np.array([1.0, meta["epoch"], meta.get("step_in_epoch", 0), meta.get("global_step", 0),
                               meta.get("best_top1", -1.0)])
    found, epoch, step_in_epoch, global_step, best = broadcast([header])[0].tolist()
    if found < 0:
        raise CheckpointError(f"process 0 could not resume from {out_dir} on its machine: see its log")
    if found == 0:
        return None
    import mindspore as ms

    for param in train_cell.get_parameters():  # one at a time: never a second copy of the whole train state
        if not is_transient(param.name):
            value = broadcast([param])[0]
            if rank != 0:
                param.set_data(ms.Tensor(value))
    if rank == 0:
        return meta
    return {"epoch": int(epoch), "step_in_epoch": int(step_in_epoch), "global_step": int(global_step),
            "best_top1": best}


def _load_newest_state(train_cell, out_dir: str, log) -> dict | None:
    import json

    import mindspore as ms

    from .checkpoint.read import read_checkpoint
    from .train_step import is_transient

    folder = os.path.join(out_dir, "checkpoints")
    candidates = []
    state_file = os.path.join(out_dir, "train_state.json")
    if os.path.isfile(state_file):
        try:
            with open(state_file) as handle:
                candidates.append(os.path.join(out_dir, json.load(handle)["checkpoint"]))
        except (ValueError, KeyError, OSError):
            log(f"{state_file} is unreadable: looking at the checkpoints themselves")
    if os.path.isdir(folder):
        candidates += sorted((os.path.join(folder, f) for f in os.listdir(folder)
                              if f.endswith(".ckpt") and not f.startswith(".")), reverse=True)
    readable = []
    for path in dict.fromkeys(candidates):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as err:
            log(f"skipping {path}: {err}")
            continue
        if "epoch" in ckpt.meta:
            readable.append(ckpt)
    if not readable:
        return None
    ckpt = max(readable, key=lambda c: (c.meta["epoch"], c.meta.get("step_in_epoch", 0)))
    targets = {p.name: p for p in train_cell.get_parameters() if not is_transient(p.name)}
    missing = [n for n in targets if n not in ckpt.params or tuple(ckpt.params[n].shape) != tuple(targets[n].shape)]
    if missing:
        raise CheckpointError(f"{ckpt.path} does not match this run's model and optimizer ({', '.join(missing[:3])}): "
                              "resume with the same config, or start a new --output_dir")
    ms.load_param_into_net(train_cell, {n: ms.Parameter(ms.Tensor(ckpt.params[n]), name=n) for n in targets},
                           strict_load=True)
    log(f"resumed from {ckpt.path} (epoch {ckpt.meta['epoch']}, step {ckpt.meta['global_step']})")
    return {**ckpt.meta, "checkpoint_path": ckpt.path}


def build_train_cell(net, cfg: TrainConfig, num_classes: int, steps_per_epoch: int, amp_level: str):
    """The engine's training step for ``net`` (already cast for ``amp_level``): (TrainStep, loss function).

    fine_tune and bench/ both call this, so the benchmark times the real step.
    """
    from mindspore import nn

    from .amp import loss_scale_cell
    from .ema import EMA
    from .loss import CrossEntropySmooth
    from .optim import create_optimizer
    from .train_step import TrainStep

    optimizer = create_optimizer(net, cfg, steps_per_epoch)
    loss_fn = CrossEntropySmooth(smooth_factor=cfg.label_smoothing, num_classes=num_classes)
    ema = EMA(net.trainable_params(), cfg.ema_decay) if cfg.ema_decay > 0 else None
    train_cell = TrainStep(nn.WithLossCell(net, loss_fn), optimizer, loss_scale_cell(amp_level, cfg.loss_scale),
                           fixed_scale=cfg.loss_scale or 1.0, clip_norm=cfg.clip_grad_norm,
                           accum_steps=cfg.accum_steps or 1, ema=ema)  # 0 (auto) unresolved: whole batches
    return train_cell, loss_fn


def fine_tune(cfg: TrainConfig, log=None) -> dict:
    """Run a fine-tuning job end to end and return its summary (best/last metrics and output paths)."""
    import mindspore as ms
    from mindspore.train import Model

    from .amp import apply_amp, resolve_amp_level
    from .callbacks import EpochEnd, Progress, RunState
    from .checkpoint.pretrained_cfg import describe_preprocess, resolve_preprocess, source_preprocess
    from .checkpoint.read import read_checkpoint
    from .distributed import all_reduce_sum, init_data_parallel
    from .download import fetch
    from .factory import create_model, resolve_weights
    from .modes import apply_mode
    from .optim import lr_schedule
    from .runtime import set_up

    device = set_up(cfg.device_target or None, cfg.mode)
    compile_cache.disable()  # until this run's key is known (an earlier run in this process may have set one)
    rank, world = init_data_parallel()
    writer = rank == 0
    log = log or (print if writer else (lambda *a, **k: None))
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by device_num {world} (each process gets "
                          "an equal share)")
    data_dir = resolve_data_dir(cfg, log)
    # The weights' preprocessing and numerics, unless the run sets them: resolved before the data and config.yaml.
    pretrained, origin = resolve_weights(cfg.pretrained, log) if cfg.pretrained else (None, {})
    pretrained = fetch(pretrained, "ckpt", cfg.pretrained_sha256, log=log) if pretrained else None
    ckpt = read_checkpoint(pretrained) if pretrained else None
    prep, prep_where = resolve_preprocess(cfg.preprocess_overrides(), source_preprocess(ckpt) if ckpt else None)
    cfg = dataclasses.replace(cfg, **prep)
    log(f"preprocessing: {describe_preprocess(prep)} ({prep_where})")
    source = (CifarSource if cfg.dataset == "cifar10" else FolderSource)(data_dir, cfg, log)
    classes, n_train, bad_files = source.classes, source.n_train, source.bad_files

    ms.set_seed(cfg.seed)
    # create_model gives the net the weights' architecture (without --model), LayerNorm epsilon and GELU form;
    # gelu/layer_norm_eps set here win. Built before the output folder is written: bad weights leave nothing there.
    net = create_model(cfg.model or (None if ckpt else "vit_b_16"), num_classes=len(classes), pretrained=ckpt,
                       strict_head=cfg.strict_head, **cfg.model_overrides())
    ckpt = None  # the net holds the weights now: do not keep a second copy through training
    if origin and not cfg.model:
        net.model_name = f"hf-hub:{origin['hub_name']}"
    if writer:
        prepare_output(cfg.output_dir)
        _remove_partial_files(cfg.output_dir)
        _write_run_files(cfg, classes)
    if net.load_report:
        for line in net.load_report.lines():
            log(line)
    log(f"numerics: LayerNorm eps {net.config.layer_norm_eps:g}, {net.config.gelu} GELU ({net.numerics_source})")
    log(apply_mode(net, cfg))  # freezes parameters, or adds the LoRA adapters, before AMP casts the net
    if cfg.auto_augment != "none" and cfg.color_jitter > 0:
        log(f"color_jitter {cfg.color_jitter:g} is not applied with auto_augment {cfg.auto_augment} (as in timm)")
    amp_level = resolve_amp_level(cfg.amp_level, device)
    apply_amp(net, amp_level)
    train_net = net
    if cfg.finetune_mode == "linear":
        train_net, source, cfg = _linear_probe(net, source, cfg, pretrained, world, log)
        n_train = source.n_train
    plan = batching(cfg, world, model=net.config, device=device, images=n_train, where=source.train_where)
    cfg = dataclasses.replace(cfg, accum_steps=plan.accum_steps)
    steps_per_epoch = plan.steps_per_epoch
    train_cell, _ = build_train_cell(train_net, cfg, len(classes), steps_per_epoch, amp_level)
    if cfg.compile_cache and cfg.mode == "graph":
        key = compile_cache.cache_key(cfg.to_dict(), net.config.to_dict(),
                                      {"classes": len(classes), "steps_per_epoch": steps_per_epoch, "amp": amp_level,
                                       "device": device, "processes": world})
        folder, warm = compile_cache.enable(cfg.output_dir, key)
        log(f"compile cache: {folder} ({'reusing the graphs an earlier run compiled' if warm else 'new'}; "
            "--compile_cache false turns it off)")
    # Validation is EpochEnd's own loop (callbacks.validate): Model.eval's nn.Loss would report the smoothed
    # training loss as a mean of batch means, and would run the whole val set on every process.
    model = Model(train_cell)

    meta = {"format": "ms_vit", "version": 1, "model_name": net.model_name, "model": net.config.to_dict(), **origin,
            "class_names": classes, "image_size": cfg.image_size, "mean": cfg.mean, "std": cfg.std,
            "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation, "preprocessing_from": prep_where,
            "finetune_mode": cfg.finetune_mode, "train_config": cfg.to_dict()}
    start_epoch, history, best, skip_steps = 0, [], -1.0, 0
    if cfg.resume:
        resumed = resume_state(train_cell, cfg.output_dir, log, rank, world)
        if resumed is None:
            log(f"nothing to resume in {cfg.output_dir}: starting at epoch 1")
        else:
            start_epoch, history, best = resumed["epoch"], resumed.get("history", []), resumed.get("best_top1", -1.0)
            skip_steps = resumed.get("step_in_epoch", 0)
    lrs = lr_schedule(cfg.lr, cfg.min_lr, steps_per_epoch, cfg.epochs, cfg.warmup_epochs)
    state = RunState(cfg.epochs, steps_per_epoch, plan.per_rank_batch * world, lrs, history, best,
                     accum_steps=cfg.accum_steps)
    state.step_offset = skip_steps
    state.last_checkpoint = (resumed or {}).get("checkpoint_path", "") if cfg.resume else ""
    state.dynamic_scale = amp_level != "O0" and cfg.loss_scale == 0
    val_data = source.val_data(cfg, rank, world)  # this process's shard
    callbacks = [Progress(state, cfg.log_every, log),
                 EpochEnd(state, val_data, train_cell, net, cfg.output_dir, meta, cfg.keep_checkpoints, writer, log,
                          reduce=all_reduce_sum if world > 1 else None, eval_net=train_net,
                          export=_best_weights(net, cfg))]
    board = None
    if cfg.tensorboard and writer:
        from .tensorboard import TensorBoardLog, open_writer

        board = open_writer(cfg.output_dir)
        callbacks.append(TensorBoardLog(state, board))
        log(f"TensorBoard events: {os.path.join(cfg.output_dir, 'tensorboard')} (tensorboard --logdir there)")
    log(f"training {net.model_name} on {n_train} images of {len(classes)} classes ({world} process{'es' * (world > 1)}, "
        f"{device}, AMP {amp_level}), {cfg.epochs} epochs x {steps_per_epoch} steps of batch {cfg.batch_size}"
        + (f" ({cfg.accum_steps} micro-batches of {plan.micro_batch} per process)" if cfg.accum_steps > 1 else ""))
    started = time.perf_counter()
    try:
        with _interruptible(state):
            for epoch in range(start_epoch, cfg.epochs):
                skip = skip_steps * plan.per_rank_batch if epoch == start_epoch else 0
                train_data = source.train_data(cfg, epoch, rank, world, skip)
                try:
                    model.train(epoch + 1, train_data, callbacks=callbacks, initial_epoch=epoch, dataset_sink_mode=False)
                except RuntimeError as err:
                    bad = data.decode_failure(err)
                    if bad is None:
                        raise
                    raise ConfigError(f"image {bad} cannot be decoded: remove it (python scripts/check_data.py "
                                      f"{data_dir} --quarantine DIR) or pass --bad_images skip") from err
                if state.interrupted:
                    if state.history and state.history[-1]["epoch"] == epoch + 1:  # the epoch had finished
                        log(f"interrupted after epoch {epoch + 1}, saved in {state.last_checkpoint}; continue with the "
                            "same command plus --resume")
                        break
                    path = _save_interrupted(train_cell, cfg, meta, state) if writer else ""
                    log(f"interrupted at epoch {state.epoch + 1} step {state.step_in_epoch}: saved {path}; continue with "
                        f"the same command plus --resume")
                    break
    finally:  # also when the run fails: the writer is closed, later compiles are not this run's
        if board is not None:
            board.close()
        compile_cache.disable()
    last = state.history[-1] if state.history else {}
    if cfg.finetune_mode == "linear":
        log(f"head training: {time.perf_counter() - started:.1f} s for {cfg.epochs - start_epoch} epoch(s) on the "
            "cached features, validation included")
    if bad_files:
        log(f"skipped {len(bad_files)} unreadable image file(s) in every epoch")
    return {"best_top1": state.best_top1, "last": last, "output_dir": cfg.output_dir, "classes": classes,
            "skipped_images": len(bad_files),
            "skipped_steps": state.skipped_steps, "net": net, "interrupted": state.interrupted, "writer": writer,
            "paths": {name: os.path.join(cfg.output_dir, name)
                      for name in ("best.ckpt", "metrics.csv", "curves.png", "config.yaml", "classes.txt")}}


# Keys that change the images or labels of training: the linear probe trains on cached eval-transform features.
AUGMENT_KEYS = {"auto_augment": "none", "color_jitter": 0.0, "random_erasing": 0.0, "mixup_alpha": 0.0,
                "cutmix_alpha": 0.0}


def _linear_probe(net, source, cfg: TrainConfig, weights_path: str, world: int, log):
    """Linear mode: (the head as the network to train, the cached-feature source, the config with whole batches)."""
    from .linear_probe import FeatureSource, HeadNet

    if world > 1:
        raise ConfigError("finetune_mode linear runs in one process (its head trains in seconds): drop --device_num")
    ignored = [k for k, off in AUGMENT_KEYS.items() if getattr(cfg, k) != off]
    if ignored:
        log(f"finetune_mode linear trains on features of the eval transform: ignoring {', '.join(ignored)}")
    return HeadNet(net), FeatureSource(source, net, cfg, weights_path, log), dataclasses.replace(
        cfg, accum_steps=cfg.accum_steps or 1)


def _best_weights(net, cfg: TrainConfig):
    """What best.ckpt holds: the network, or for LoRA its weights with the adapters merged (plain names)."""
    if cfg.finetune_mode != "lora":
        return lambda: net
    from .lora import merged_parameters

    return lambda: merged_parameters(net)


# Up to this many images the check before training decodes every one (a few seconds); above, sizes and magic bytes.
FULL_CHECK_LIMIT = 20_000


def _check_images(data_dir: str, cfg: TrainConfig, log) -> set:
    """The data check before training, and the unreadable-image policy. Returns the unreadable files (to skip)."""
    from .check_data import scan

    total = sum(len(data.list_images(os.path.join(data_dir, split, c))) for split in ("train", "val")
                for c in data.class_folders(os.path.join(data_dir, split)))
    unreadable = scan(data_dir, cfg.image_size, full=total <= FULL_CHECK_LIMIT).unreadable()
    data.set_bad_images(cfg.bad_images)
    if not unreadable:
        return set()
    first = unreadable[0]
    if cfg.bad_images == "fail":
        raise ConfigError(f"{len(unreadable)} unreadable image file(s) in {data_dir}, first {first.path} ({first.kind}): "
                          f"move them away with python scripts/check_data.py {data_dir} --quarantine DIR, or pass "
                          "--bad_images skip")
    log(f"skipping {len(unreadable)} unreadable image file(s) ({first.path}, ...): see python scripts/check_data.py "
        f"{data_dir}")
    return {f.path for f in unreadable}


def _remove_partial_files(out_dir: str) -> None:
    """Temporary files of writes that a crash interrupted (ours, by their names): never a complete checkpoint."""
    for folder in (out_dir, os.path.join(out_dir, "checkpoints")):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if (name.startswith(".") and name.endswith(".partial.ckpt")) or re.search(r"\.\d+\.tmp(\.png)?$", name):
                os.remove(os.path.join(folder, name))


class _interruptible:
    """While training: the first Ctrl-C (or SIGTERM, as from a scheduler) asks the step loop to stop and save;
    a second one stops at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, state):
        self.state = state
        self.previous = {}

    def _handle(self, signum, frame):
        import signal

        self.state.interrupted = True
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                self.previous[name] = signal.getsignal(getattr(signal, name))
                signal.signal(getattr(signal, name), self._handle)
            self.state.on_sigint = self._handle
        return self

    def __exit__(self, *exc):
        import signal

        self.state.on_sigint = None
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)
        return False


def _save_interrupted(train_cell, cfg: TrainConfig, meta: dict, state) -> str:
    from .atomic import write_json_atomic
    from .checkpoint.save import save_checkpoint

    path = save_checkpoint(train_cell, os.path.join(cfg.output_dir, "checkpoints", "interrupted.ckpt"),
                           meta={**meta, "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
                                 "global_step": state.global_step, "best_top1": state.best_top1,
                                 "history": state.history, "interrupted": True})
    write_json_atomic(os.path.join(cfg.output_dir, "train_state.json"),
                      {"checkpoint": os.path.relpath(path, cfg.output_dir), "epoch": state.epoch,
                       "step_in_epoch": state.step_in_epoch, "global_step": state.global_step})
    return path


def _write_run_files(cfg: TrainConfig, classes: list) -> None:
    import yaml

    with open(os.path.join(cfg.output_dir, "config.yaml"), "w") as handle:
        yaml.safe_dump(cfg.to_dict(), handle, sort_keys=False)
    with open(os.path.join(cfg.output_dir, "classes.txt"), "w") as handle:
        handle.write("\n".join(classes) + "\n")


def main(argv=None) -> int:
    cfg = parse_config(argv)
    result = fine_tune(cfg)
    if result["interrupted"]:
        return 130
    if not result["writer"]:  # data-parallel workers other than the first stay quiet
        return 0
    last = result["last"]
    print(f"done: best val top-1 {result['best_top1']:.4f}; last epoch top-1 {last.get('top_1', float('nan')):.4f} "
          f"top-5 {last.get('top_5', float('nan')):.4f}")
    for name, path in result["paths"].items():
        if os.path.exists(path):
            print(f"  {name:<12} {path}")
    return 0


if __name__ == "__main__":
    from .cli import run

    sys.exit(run(main))
