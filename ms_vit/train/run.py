"""Fine-tuning: ``fine_tune(cfg)`` runs a TrainConfig as a sequence of stages, each a function from typed input to
typed output; ``main(argv)`` is the command line of run_finetune.sh.

    resolve(cfg)                   -> Plan        device, processes, weights, preprocessing, AMP
    open_source(plan)              -> TrainingSource (data.sources): class folders or CIFAR-10, checked
    build_model(plan, classes)     -> ViT         architecture and numerics from the weights, mode, AMP
    build_trainer(plan, net, src)  -> Trainer     batching, the training step, the compile cache
    fit(plan, trainer, net)        -> RunState    Model.train with the callbacks, epoch by epoch; interrupts, resume
                                   -> TrainResult
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

from ms_vit.config import TrainConfig
from ms_vit.errors import ConfigError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
OUTPUTS = ("best.ckpt", "metrics.csv", "curves.png", "config.yaml", "classes.txt")


@dataclass
class Plan:
    """What a run settles before it reads any image: where it runs and with what weights and preprocessing.

    ``cfg`` holds the resolved preprocessing (the weights' unless the run sets it); ``ckpt`` the weights as read
    (released once the network holds them).
    """

    cfg: TrainConfig
    device: str
    rank: int
    world: int
    data_dir: str
    amp_level: str
    weights: str | None = None  # the local weights file or folder
    ckpt: object = None  # checkpoint.read.CheckpointFile
    origin: dict = field(default_factory=dict)  # hub name and revision of hf-hub: weights
    preprocessing_from: str = ""

    @property
    def is_writer(self) -> bool:
        """This process writes the outputs (rank 0; the only process of a one-process run)."""
        return self.rank == 0


@dataclass
class Trainer:
    """The compiled side of a run: the training step and what it was built for."""

    cfg: TrainConfig  # accum_steps resolved
    train_cell: object  # train.step.TrainStep
    train_net: object  # what trains: the net, or the linear probe's head
    source: object  # the data the step sees (the linear probe's: cached features)
    batches: object  # models.complexity.Batching
    meta: dict  # every checkpoint's metadata


@dataclass
class TrainResult:
    """What ``fine_tune`` returns."""

    best_top1: float
    last: dict  # the last epoch's metrics row ({} when no epoch finished)
    output_dir: str
    classes: list
    net: object  # the trained ViT (LoRA: with its adapters)
    skipped_images: int = 0
    skipped_steps: int = 0
    interrupted: bool = False
    is_writer: bool = True
    paths: dict = field(default_factory=dict)  # the output files by name (those that exist)


def fine_tune(cfg: TrainConfig, log=None) -> TrainResult:
    """Run a fine-tuning job end to end and return its summary (best/last metrics and output paths)."""
    from ms_vit.data.sources import open_source
    from ms_vit.train import compile_cache

    compile_cache.disable()  # until this run's key is known (an earlier run in this process may have set one)
    plan = resolve(cfg, log)
    log = log or (print if plan.is_writer else (lambda *a, **k: None))
    source = open_source(plan.data_dir, plan.cfg, log)
    net = build_model(plan, source.classes, log)
    trainer = build_trainer(plan, net, source, log)
    started = time.perf_counter()
    state = fit(plan, trainer, net, log)
    cfg = trainer.cfg
    if cfg.finetune_mode == "linear":
        log(f"head training: {time.perf_counter() - started:.1f} s for the epoch(s) on the cached features, "
            "validation included")
    if source.bad_files:
        log(f"skipped {len(source.bad_files)} unreadable image file(s) in every epoch")
    paths = {name: os.path.join(cfg.output_dir, name) for name in OUTPUTS}
    return TrainResult(state.best_top1, state.history[-1] if state.history else {}, cfg.output_dir, source.classes,
                       net, len(source.bad_files), state.skipped_steps, state.interrupted, plan.is_writer,
                       {k: p for k, p in paths.items() if os.path.exists(p)})


def resolve(cfg: TrainConfig, log=None) -> Plan:
    """Stage 1: device and processes, the data folder, the weights (read once), and the preprocessing."""
    from ms_vit.checkpoint.pretrained_cfg import describe_preprocess, resolve_preprocess, source_preprocess
    from ms_vit.checkpoint.read import read_checkpoint
    from ms_vit.checkpoint.resume import check_output_writable
    from ms_vit.data.sources import resolve_data_dir
    from ms_vit.distributed import init_data_parallel
    from ms_vit.download import fetch
    from ms_vit.models.factory import resolve_weights
    from ms_vit.runtime import set_up
    from ms_vit.train.amp import resolve_amp_level

    device = set_up(cfg.device_target or None, cfg.mode)
    rank, world = init_data_parallel()
    log = log or (print if rank == 0 else (lambda *a, **k: None))
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes (each process "
                          "gets an equal share)")
    if rank == 0:
        check_output_writable(cfg.output_dir)
    data_dir = resolve_data_dir(cfg.section("data"), log)
    weights, origin = resolve_weights(cfg.pretrained, log) if cfg.pretrained else (None, {})
    weights = fetch(weights, "ckpt", cfg.pretrained_sha256, log=log, key="pretrained_sha256") if weights else None
    ckpt = read_checkpoint(weights) if weights else None
    prep, where = resolve_preprocess(cfg.preprocess_overrides(), source_preprocess(ckpt) if ckpt else None)
    log(f"preprocessing: {describe_preprocess(prep)} ({where})")
    return Plan(dataclasses.replace(cfg, **prep), device, rank, world, data_dir,
                resolve_amp_level(cfg.amp_level, device, log), weights, ckpt, origin, where)


def build_model(plan: Plan, classes: list, log):
    """Stage 3: the network the weights describe (or the preset), its fine-tuning mode applied, cast for AMP.

    Built before the output folder is written: bad weights leave nothing there.
    """
    import mindspore as ms

    from ms_vit.models.factory import create_model
    from ms_vit.train.amp import apply_amp
    from ms_vit.train.modes import apply_mode

    cfg = plan.cfg
    ms.set_seed(cfg.seed)
    net = create_model(cfg.model or (None if plan.ckpt else "vit_b_16"), num_classes=len(classes),
                       pretrained=plan.ckpt, strict_head=cfg.strict_head, **cfg.model_overrides())
    plan.ckpt = None  # the net holds the weights now: no second copy through training
    if plan.origin and not cfg.model:
        net.model_name = f"hf-hub:{plan.origin['hub_name']}"
    if net.load_report:
        for line in net.load_report.lines():
            log(line)
    log(f"numerics: LayerNorm eps {net.config.layer_norm_eps:g}, {net.config.gelu} GELU ({net.numerics_source})")
    log(apply_mode(net, cfg.section("finetune")))  # freezes, or adds the LoRA adapters, before AMP casts the net
    if cfg.auto_augment != "none" and cfg.color_jitter > 0:
        log(f"color_jitter {cfg.color_jitter:g} is not applied with auto_augment {cfg.auto_augment} (as in timm)")
    apply_amp(net, plan.amp_level)
    return net


def build_trainer(plan: Plan, net, source, log) -> Trainer:
    """Stage 4: the output folder, batching (micro-batches from memory on CPU), the training step, the compile
    cache. Linear mode trains the head on the backbone's cached features instead of the net on images."""
    from ms_vit.checkpoint.resume import prepare_output, remove_partial_files
    from ms_vit.models.complexity import batching
    from ms_vit.train import compile_cache

    cfg = plan.cfg
    if plan.is_writer:
        prepare_output(cfg.output_dir)
        remove_partial_files(cfg.output_dir)
        _write_run_files(cfg.output_dir, cfg.to_dict(), source.classes)
    train_net = net
    if cfg.finetune_mode == "linear":
        train_net, source, cfg = _linear_probe(net, source, cfg, plan.weights, plan.world, log)
    batches = batching(cfg.section("data"), plan.world, model=net.config, device=plan.device, images=source.n_train,
                       where=source.train_where, amp_level=plan.amp_level)
    cfg = dataclasses.replace(cfg, accum_steps=batches.accum_steps)
    if hasattr(source, "cfg"):  # the pipeline cuts its micro-batches by accum_steps: give it the resolved value
        source.cfg = dataclasses.replace(source.cfg, accum_steps=batches.accum_steps)
    class_weights = _class_balance(cfg, source, log)
    train_cell, _ = build_train_cell(train_net, cfg, len(source.classes), batches.steps_per_epoch, plan.amp_level,
                                     class_weights=class_weights)
    if cfg.compile_cache and cfg.mode == "graph" and not compile_cache.entry_script():
        log("compile cache: off (MindSpore's cache reads the entry script, and this process has none, e.g. python -c)")
    elif cfg.compile_cache and cfg.mode == "graph":
        shapes = {"classes": len(source.classes), "steps_per_epoch": batches.steps_per_epoch,
                  "amp": plan.amp_level, "device": plan.device, "processes": plan.world}
        if class_weights is not None:  # compiled into the loss graph as constants
            shapes["class_weights"] = [round(float(w), 6) for w in class_weights]
        key = compile_cache.cache_key(cfg.graph_values(), net.config.to_dict(), shapes)
        folder, warm = compile_cache.enable(cfg.output_dir, key)
        log(f"compile cache: {folder} ({'reusing the graphs an earlier run compiled' if warm else 'new'}; "
            "--compile_cache false turns it off)")
    meta = {"format": "ms_vit", "version": 1, "model_name": net.model_name, "model": net.config.to_dict(),
            **plan.origin, "class_names": source.classes, "image_size": cfg.image_size, "mean": cfg.mean,
            "std": cfg.std, "crop_pct": cfg.crop_pct, "interpolation": cfg.interpolation,
            "preprocessing_from": plan.preprocessing_from, "finetune_mode": cfg.finetune_mode,
            "train_config": cfg.to_dict()}
    return Trainer(cfg, train_cell, train_net, source, batches, meta)


def build_train_cell(net, cfg: TrainConfig, num_classes: int, steps_per_epoch: int, amp_level: str,
                     class_weights=None):
    """The engine's training step for ``net`` (already cast for ``amp_level``): (TrainStep, loss function).
    ``class_weights``: the loss's per-class weights (``class_balance: loss``), or None.

    fine_tune and bench/ both call this, so the benchmark times the real step.
    """
    from mindspore import nn

    from ms_vit.train.amp import loss_scale_cell
    from ms_vit.train.ema import EMA
    from ms_vit.train.loss import CrossEntropySmooth
    from ms_vit.train.optim import create_optimizer
    from ms_vit.train.step import TrainStep

    optimizer = create_optimizer(net, cfg.section("optim"), steps_per_epoch)
    loss_fn = CrossEntropySmooth(smooth_factor=cfg.label_smoothing, num_classes=num_classes,
                                 class_weights=class_weights)
    ema = EMA(net.trainable_params(), cfg.ema_decay) if cfg.ema_decay > 0 else None
    train_cell = TrainStep(nn.WithLossCell(net, loss_fn), optimizer, loss_scale_cell(amp_level, cfg.loss_scale),
                           fixed_scale=cfg.loss_scale or 1.0, clip_norm=cfg.clip_grad_norm,
                           accum_steps=cfg.accum_steps or 1, ema=ema)  # 0 (auto) unresolved: whole batches
    return train_cell, loss_fn


def fit(plan: Plan, trainer: Trainer, net, log):
    """Stage 5: ``Model.train`` epoch by epoch with the callbacks (progress, validation and checkpoints,
    TensorBoard), from where --resume finds the run; a first Ctrl-C or SIGTERM saves and stops. Returns the
    ``RunState``. TensorBoard is closed and the compile cache turned off however the run ends."""
    from mindspore.train import Model

    from ms_vit.checkpoint.resume import resume_state, save_interrupted
    from ms_vit.data import folder as data
    from ms_vit.distributed import all_reduce_sum
    from ms_vit.train import compile_cache
    from ms_vit.train.callbacks import EpochEnd, Progress, RunState
    from ms_vit.train.interrupt import Interruptible
    from ms_vit.train.optim import lr_schedule

    cfg, source, batches = trainer.cfg, trainer.source, trainer.batches
    resumed = resume_state(trainer.train_cell, cfg.output_dir, log, plan.rank, plan.world) if cfg.resume else None
    if cfg.resume and resumed is None:
        log(f"nothing to resume in {cfg.output_dir}: starting at epoch 1")
    resumed = resumed or {}
    start_epoch, skip_steps = resumed.get("epoch", 0), resumed.get("step_in_epoch", 0)
    lrs = lr_schedule(cfg.lr, cfg.min_lr, batches.steps_per_epoch, cfg.epochs, cfg.warmup_epochs)
    state = RunState(cfg.epochs, batches.steps_per_epoch, batches.per_rank_batch * plan.world, lrs,
                     resumed.get("history", []), resumed.get("best_top1", -1.0), accum_steps=cfg.accum_steps)
    state.step_offset, state.last_checkpoint = skip_steps, resumed.get("checkpoint_path", "")
    state.dynamic_scale = plan.amp_level not in ("O0", "bf16") and cfg.loss_scale == 0
    guard = Interruptible(state)
    callbacks = [Progress(state, cfg.log_every, log), guard.callback(),
                 EpochEnd(state, source.val_data(plan.rank, plan.world), trainer.train_cell, net, cfg.output_dir,
                          trainer.meta, cfg.keep_checkpoints, plan.is_writer, log,
                          reduce=all_reduce_sum if plan.world > 1 else None, eval_net=trainer.train_net,
                          export=_best_weights(net, cfg.finetune_mode))]
    board = _tensorboard(cfg.output_dir, state, callbacks, log) if plan.is_writer and cfg.tensorboard else None
    log(f"training {net.model_name} on {source.n_train} images of {len(source.classes)} classes ({plan.world} "
        f"process{'es' * (plan.world > 1)}, {plan.device}, AMP {plan.amp_level}), {cfg.epochs} epochs x "
        f"{batches.steps_per_epoch} steps of batch {cfg.batch_size}"
        + (f" ({cfg.accum_steps} micro-batches of {batches.micro_batch} per process)" if cfg.accum_steps > 1 else ""))
    model = Model(trainer.train_cell)  # validation is EpochEnd's own loop: Model.eval would average batch means
    try:
        with guard:
            for epoch in range(start_epoch, cfg.epochs):
                skip = skip_steps * batches.per_rank_batch if epoch == start_epoch else 0
                train_data = source.train_data(epoch, plan.rank, plan.world, skip)
                try:
                    model.train(epoch + 1, train_data, callbacks=callbacks, initial_epoch=epoch,
                                dataset_sink_mode=False)
                except RuntimeError as err:
                    bad = data.decode_failure(err)
                    if bad is None:
                        raise
                    raise ConfigError(f"image {bad} cannot be decoded: remove it (python scripts/check_data.py "
                                      f"{plan.data_dir} --quarantine DIR) or pass --bad_images skip") from err
                if state.interrupted:
                    if state.history and state.history[-1]["epoch"] == epoch + 1:  # the epoch had finished
                        log(f"interrupted after epoch {epoch + 1}, saved in {state.last_checkpoint}; continue with "
                            "the same command plus --resume")
                    else:
                        path = save_interrupted(trainer.train_cell, cfg.output_dir, trainer.meta, state) \
                            if plan.is_writer else ""
                        log(f"interrupted at epoch {state.epoch + 1} step {state.step_in_epoch}: saved {path}; "
                            "continue with the same command plus --resume")
                    break
    finally:
        if board is not None:
            board.close()
        compile_cache.disable()
    return state


def _tensorboard(out_dir: str, state, callbacks: list, log):
    """--tensorboard: the event writer (returned, for fit to close) and its callback appended."""
    from ms_vit.train.tensorboard import TensorBoardLog, open_writer

    board = open_writer(out_dir)
    callbacks.append(TensorBoardLog(state, board))
    log(f"TensorBoard events: {os.path.join(out_dir, 'tensorboard')} (tensorboard --logdir there)")
    return board


def _linear_probe(net, source, cfg: TrainConfig, weights_path: str, world: int, log):
    """Linear mode: (the head as the network to train, the cached-feature source, the config with whole batches)."""
    from ms_vit.train.linear_probe import FeatureSource, HeadNet

    if world > 1:
        raise ConfigError("finetune_mode linear runs in one process (its head trains in seconds): drop --device_num")
    ignored = cfg.changed("augment")  # the features are of the eval transform
    if ignored:
        log(f"finetune_mode linear trains on features of the eval transform: ignoring {', '.join(ignored)}")
    return HeadNet(net), FeatureSource(source, net, cfg, weights_path, log), dataclasses.replace(
        cfg, accum_steps=cfg.accum_steps or 1)


def _class_balance(cfg: TrainConfig, source, log):
    """class_balance: logs what was taken (or a hint for imbalanced classes); returns the loss's class weights with
    ``loss``, else None (the sampler reads its weights from the labels, ``data.folder.epoch_indices``)."""
    from ms_vit.data.balance import class_weights, describe

    counts = source.class_counts()
    weights = class_weights(counts, cfg.class_balance_weights) if cfg.class_balance != "none" else None
    line = describe(cfg.class_balance, cfg.class_balance_weights, counts, weights)
    if line:
        log(line)
    return weights if cfg.class_balance == "loss" else None


def _best_weights(net, finetune_mode: str):
    """What best.ckpt holds: the network, or for LoRA its weights with the adapters merged (plain names)."""
    if finetune_mode != "lora":
        return lambda: net
    from ms_vit.train.lora import merged_parameters

    return lambda: merged_parameters(net)


def _write_run_files(out_dir: str, values: dict, classes: list) -> None:
    """config.yaml (the resolved configuration) and classes.txt, before the first step."""
    import yaml

    from ms_vit.atomic import write_text_atomic

    write_text_atomic(os.path.join(out_dir, "config.yaml"), yaml.safe_dump(values, sort_keys=False))
    write_text_atomic(os.path.join(out_dir, "classes.txt"), "\n".join(classes) + "\n")


def main(argv=None) -> int:
    from ms_vit.config.document import parse_config

    result = fine_tune(parse_config(argv))
    if result.interrupted:
        return 130
    if not result.is_writer:  # data-parallel workers other than the first stay quiet
        return 0
    last = result.last
    print(f"done: best val top-1 {result.best_top1:.4f}; last epoch top-1 {last.get('top_1', float('nan')):.4f} "
          f"top-5 {last.get('top_5', float('nan')):.4f}")
    for name, path in result.paths.items():
        print(f"  {name:<12} {path}")
    return 0


if __name__ == "__main__":
    from ms_vit.cli import run

    sys.exit(run(main))
