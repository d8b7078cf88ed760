"""What trains in a fine-tuning run: every weight (full), the head (linear), the upper blocks (frozen) or low-rank
adapters (lora). README "Choosing a mode" says when to pick which.

Freezing is ``requires_grad = False``: the optimizer, weight decay groups and EMA never see a frozen parameter, and
the training step asks no gradient for it. In frozen mode the encoder also stops the gradient at the output of the
last frozen block (``TransformerEncoder.frozen_blocks``), so the backward pass ends there.
"""

from __future__ import annotations

from ms_vit.errors import ConfigError
from ms_vit.models.vit import ParamGroup


def frozen_by_blocks(group: ParamGroup, blocks: int) -> bool:
    """Frozen mode: the embeddings (patch embedding, positions, class and register tokens) and blocks 0 .. blocks-1;
    what the model puts outside the blocks (final norm, TokenLearner, TokenFuser) and the head stay trainable."""
    return group.kind == "embedding" or (group.kind == "block" and group.block < blocks)


def apply_mode(net, finetune) -> str:
    """Prepare ``net`` (an ms_vit ViT, before compiling) for ``finetune.finetune_mode`` (``config.FinetuneKeys``,
    ``TrainConfig.section("finetune")``); returns the trainable-parameter line for the log. LoRA adapters are added
    here (``ms_vit.train.lora``)."""
    mode = finetune.finetune_mode
    if mode == "frozen":
        if finetune.freeze_blocks > net.config.num_layers:
            raise ConfigError(f"freeze_blocks {finetune.freeze_blocks} is more than the model's {net.config.num_layers} "
                              f"blocks: use 0 .. {net.config.num_layers}")
        if net.config.token_learner_tokens and finetune.freeze_blocks > net.config.learner_after:
            raise ConfigError(f"freeze_blocks {finetune.freeze_blocks} reaches past TokenLearner (after block "
                              f"{net.config.learner_after}): use 0 .. {net.config.learner_after}")
        _freeze(net, lambda name, group: frozen_by_blocks(group, finetune.freeze_blocks))
        net.transformer.frozen_blocks = finetune.freeze_blocks
    elif mode == "lora":
        from ms_vit.train.lora import add_lora, is_adapter

        add_lora(net, finetune.lora_rank, finetune.lora_alpha, finetune.lora_dropout, finetune.lora_targets)
        _freeze(net, lambda name, group: not (is_adapter(name) or group.kind == "head"))
    elif mode == "linear":
        _freeze(net, lambda name, group: group.kind != "head")
    return trainable_line(net, mode)


def _freeze(net, frozen) -> None:
    """``requires_grad = False`` on every parameter for which ``frozen(name, net.group_of(name))`` holds."""
    for param in net.get_parameters():
        if frozen(param.name, net.group_of(param.name)):
            param.requires_grad = False


def trainable_counts(net) -> tuple[int, int]:
    """(trainable, all) parameter counts of ``net``, adapters included in both."""
    sizes = [(int(p.size), p.requires_grad) for p in net.get_parameters()]
    return sum(s for s, trains in sizes if trains), sum(s for s, _ in sizes)


def trainable_line(net, mode: str) -> str:
    trainable, total = trainable_counts(net)
    return f"trainable parameters ({mode}): {trainable:,} of {total:,} ({100.0 * trainable / total:.2f} %)"
