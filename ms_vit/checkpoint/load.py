"""Load weights into a built ViT, adapting what may be adapted and refusing the rest, with a report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ms_vit.errors import CheckpointError
from ms_vit.models.vit import HEAD_PARAMS, POS_EMBED_PARAM, REGISTER_PARAM
from ms_vit.checkpoint.adapt import resize_pos_embed, split_optimizer_state, strip_prefixes
from ms_vit.checkpoint.convert import CONVERTERS, detect_format, pos_antialias
from ms_vit.checkpoint.read import read_checkpoint



def _np_dtypes() -> dict:
    import mindspore as ms

    return {ms.float32: np.float32, ms.float16: np.float16, ms.float64: np.float64}


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did: every list names parameters (or ignored checkpoint entries)."""

    source: str
    loaded: list = field(default_factory=list)
    head_reset: list = field(default_factory=list)
    resized: list = field(default_factory=list)  # (name, old shape, new shape, how)
    ignored: list = field(default_factory=list)  # optimizer state and entries the net does not have
    fresh: list = field(default_factory=list)  # TokenLearner/TokenFuser parameters a plain ViT checkpoint lacks
    prefix: str = ""
    meta: dict = field(default_factory=dict)
    format: str = "tutorial"
    head_missing: bool = False  # a backbone without a classifier (e.g. transformers' Dinov2Model): the head is new

    def lines(self) -> list[str]:
        """Human-readable summary, one fact a line (like HF's 'newly initialized' notice)."""
        out = [f"loaded {len(self.loaded)} parameters from {self.source}"
               + (f" ({self.format} layout, converted)" if self.format not in ("tutorial", "unknown") else "")
               + (f" (prefix {self.prefix!r} removed)" if self.prefix else "")]
        if self.head_reset:
            why = "has no classifier (a backbone)" if self.head_missing else "has another class count"
            out.append(f"re-initialised the classifier ({', '.join(self.head_reset)}): the checkpoint {why}; train it "
                       "before use")
        if self.fresh:
            out.append(f"kept {len(self.fresh)} TokenLearner/TokenFuser parameters at their initial values: the "
                       "checkpoint is a plain ViT; they train from scratch")
        for name, old, new, how in self.resized:
            out.append(f"resized {name} from {tuple(old)} to {tuple(new)} ({how} on the patch grid, as the source does)")
        if self.ignored:
            shown = ", ".join(self.ignored[:6]) + (f", ... ({len(self.ignored)} in all)" if len(self.ignored) > 6 else "")
            out.append(f"ignored {len(self.ignored)} checkpoint entries not in the model (optimizer state etc.): {shown}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def to_model_names(params: dict, expected: set, source: str = "<dict>") -> tuple[dict, str, str, list]:
    """Any supported layout -> the tutorial's names. Returns (params, prefix removed, format, ignored names)."""
    params, prefix = strip_prefixes(params, expected)
    params, ignored = split_optimizer_state(params)
    fmt = detect_format(params)
    if fmt != "unknown":
        try:
            params, dropped = CONVERTERS[fmt](params)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{source} looks like a {fmt} ViT checkpoint but {err} is missing or malformed: "
                                  "the file is incomplete") from err
        ignored = ignored + dropped
    return params, prefix, fmt, ignored


# Modules a ViT checkpoint from elsewhere never has: loading one into a model with them leaves them as initialised.
ADDED_MODULES = ("transformer.token_learner.", "transformer.token_fuser.")


def load_params(net, params: dict, source: str = "<dict>", strict_head: bool = False,
                meta: dict | None = None) -> LoadReport:
    """Load a flat {name: array} dict into ``net`` (a ``ms_vit.ViT``) and report what was done.

    Adapts: a wrapper prefix (``network.``, ``backbone.``, ``_backbone.``); optimizer state (ignored); a class
    count that differs (the head is re-initialised, unless ``strict_head``); an image size that differs (the
    position embedding is resized). Anything else missing or mis-shaped raises CheckpointError naming it.
    """
    import mindspore as ms

    np_dtypes = _np_dtypes()
    targets = {p.name: p for p in net.get_parameters()}
    params, prefix, fmt, state = to_model_names(params, set(targets), source)
    report = LoadReport(source=source, prefix=prefix, meta=meta or {}, format=fmt)
    missing = [name for name in targets if name not in params]
    if not any(name.startswith(ADDED_MODULES) for name in params):  # a plain ViT checkpoint into a TokenLearner ViT
        report.fresh = [name for name in missing if name.startswith(ADDED_MODULES)]
        missing = [name for name in missing if name not in report.fresh]
    if missing and set(missing) == set(HEAD_PARAMS) and not strict_head:
        report.head_missing = True  # a backbone: the head starts fresh, as for another class count
        missing = []
    _check_architecture(params, targets, missing, source, fmt)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"{source} lacks {len(missing)} of the model's {len(targets)} parameters ({shown}): "
                              "it is another model or architecture; pick the matching --model or checkpoint")
    to_load = {}
    if report.head_missing:
        report.head_reset = list(HEAD_PARAMS)
    for name, param in targets.items():
        if name in report.fresh or name in report.head_reset:
            continue
        value = np.asarray(params[name])
        want = tuple(param.shape)
        if tuple(value.shape) != want:
            if name in HEAD_PARAMS and not strict_head and value.shape[1:] == want[1:]:
                report.head_reset.append(name)
                continue
            if name == POS_EMBED_PARAM and value.ndim == 3 and value.shape[2] == want[2]:
                grid = int(round(np.sqrt(want[1] - 1)))
                antialias = pos_antialias(fmt, params)
                try:
                    value = resize_pos_embed(value, (grid, grid), antialias=antialias)
                except ValueError as err:
                    raise CheckpointError(f"{source}: cannot resize {name} {value.shape} to {want}: {err}") from err
                report.resized.append((name, tuple(params[name].shape), want,
                                       "antialiased bicubic" if antialias else "bicubic"))
            else:
                hint = (" (another class count, and strict_head is on: turn it off to re-initialise the head, or use a "
                        "checkpoint with this class count)" if name in HEAD_PARAMS
                        else ": the checkpoint is another architecture")
                raise CheckpointError(f"{source}: parameter {name} has shape {tuple(value.shape)}, "
                                      f"the model expects {want}{hint}")
        to_load[name] = ms.Parameter(ms.Tensor(value.astype(np_dtypes[param.dtype], copy=False)), name=name)
    if report.head_reset:
        net.init_head()
    # Parameters kept at their (new) initial values go in as they are: MindSpore warns about every one left out.
    for name in report.head_reset + report.fresh:
        to_load[name] = ms.Parameter(targets[name].data.copy(), name=name)
    not_loaded, _ = ms.load_param_into_net(net, to_load, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{source}: MindSpore did not load {', '.join(not_loaded[:5])}")
    report.loaded = sorted(set(to_load) - set(report.head_reset) - set(report.fresh))
    report.ignored = state + sorted(set(params) - set(targets))
    return report


def _check_architecture(params: dict, targets: dict, missing: list, source: str, fmt: str) -> None:
    """One line for weights whose LayerScale or register tokens disagree with the model's, before the generic
    'lacks N parameters' (which would not say why)."""
    has_scale = any(n.endswith(".layer_scale.gamma") for n in params)
    wants_scale = any(n.endswith(".layer_scale.gamma") for n in targets)
    lacking_scale = [n for n in missing if n.endswith(".layer_scale.gamma")]
    if lacking_scale and has_scale:
        raise CheckpointError(f"{source} is a LayerScale model ({fmt} layout) but lacks {lacking_scale[0]} "
                              f"({len(lacking_scale)} LayerScale parameters missing): the file is incomplete; download "
                              "or save it again")
    if has_scale != wants_scale:
        what = ("has LayerScale, the model has none" if has_scale else "has no LayerScale, the model has")
        raise CheckpointError(f"{source} {what}: it is another architecture; leave --model out to take the "
                              "architecture from the weights, or pick the matching preset (dinov2_* have LayerScale)")
    have = int(np.asarray(params[REGISTER_PARAM]).shape[1]) if REGISTER_PARAM in params else 0
    want = int(targets[REGISTER_PARAM].shape[1]) if REGISTER_PARAM in targets else 0
    if have != want:
        raise CheckpointError(f"{source} has {have} register tokens, the model {want}: leave --model and "
                              "num_register_tokens out to take them from the weights, or pick the matching preset "
                              "(dinov2_*_reg have 4)")


def load_checkpoint(net, path: str, strict_head: bool = False) -> LoadReport:
    """Load a checkpoint file into a built ``ms_vit.ViT`` and return a ``LoadReport``.

    Args:
        net: the ViT to fill.
        path: a ``.ckpt`` written by ``ms.save_checkpoint`` (the tutorial's names), by ``Model`` training (optimizer
            state is ignored) or by ms_vit (with metadata).
        strict_head: refuse, instead of re-initialising, a classifier with another class count.

    Raises:
        CheckpointError: one line naming the file and the fix, for a missing, empty, truncated or foreign file and
            for any parameter that is missing or mis-shaped (other than the head and the position embedding).
    """
    ckpt = read_checkpoint(path)
    return load_params(net, ckpt.params, source=ckpt.path, strict_head=strict_head, meta=ckpt.meta)
