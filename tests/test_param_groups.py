"""The model's parameter groups (ms_vit.models.vit: group_of, no_weight_decay, layer_id, block paths) and what the
optimizer, the fine-tuning modes, the EMA and LoRA do with them, on tiny models."""

from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY

import ms_vit
from ms_vit.models.vit import block_index, is_embedding, is_head, layer_id, no_weight_decay, param_group

# Below ``transformer.layers.{i}.``: does the parameter take weight decay?
BLOCK = {"0.cell.0.gamma": False, "0.cell.0.beta": False, "0.cell.1.qkv.weight": True, "0.cell.1.qkv.bias": False,
         "0.cell.1.out.weight": True, "0.cell.1.out.bias": False, "1.cell.0.gamma": False, "1.cell.0.beta": False,
         "1.cell.1.dense1.weight": True, "1.cell.1.dense1.bias": False, "1.cell.1.dense2.weight": True,
         "1.cell.1.dense2.bias": False}
LAYER_SCALE = {"0.layer_scale.gamma": False, "1.layer_scale.gamma": False}
EMBEDDINGS = {"cls": False, "pos_embedding": False, "patch_embedding.conv.weight": True,
              "patch_embedding.conv.bias": False}
TOP = {"norm.gamma": ("other", False), "norm.beta": ("other", False), "dense.weight": ("head", True),
       "dense.bias": ("head", False)}
TOKEN_LEARNER = {"transformer.token_learner.score." + k: v for k, v in {
    "norm.gamma": False, "norm.beta": False, "dense1.weight": True, "dense1.bias": False, "dense2.weight": True,
    "dense2.bias": False}.items()}
TOKEN_FUSER = {"transformer.token_fuser." + k: v for k, v in {
    "norm1.gamma": False, "norm1.beta": False, "mix.weight": True, "mix.bias": False, "norm2.gamma": False,
    "norm2.beta": False, "gate.norm.gamma": False, "gate.norm.beta": False, "gate.dense1.weight": True,
    "gate.dense1.bias": False, "gate.dense2.weight": True, "gate.dense2.bias": False}.items()}

MODELS = {
    "tiny": lambda: ms_vit.create_model(TINY),
    "dinov2_reg": lambda: ms_vit.create_model("dinov2_s14_reg", num_layers=2, num_classes=3, image_size=28),
    "token_learner": lambda: ms_vit.create_model(TINY, token_learner_tokens=4, token_learner_layer=1,
                                                 token_fuser=True, pool="mean"),
}


def expected_groups(model: str) -> dict:
    """{name: (kind, block, decays, layer id)} for every parameter of a 2-block model of MODELS."""
    block = {**BLOCK, **(LAYER_SCALE if model == "dinov2_reg" else {})}
    embeddings = {**EMBEDDINGS, **({"register_tokens": False} if model == "dinov2_reg" else {})}
    out = {name: ("embedding", None, decays, 0) for name, decays in embeddings.items()}
    for i in range(2):
        out.update({f"transformer.layers.{i}.{sub}": ("block", i, decays, i + 1) for sub, decays in block.items()})
    if model == "token_learner":
        out.update({name: ("other", None, decays, 3) for name, decays in {**TOKEN_LEARNER, **TOKEN_FUSER}.items()})
    out.update({name: (kind, None, decays, 3) for name, (kind, decays) in TOP.items()})
    return out


def groups_of(net) -> dict:
    return {p.name: (*net.group_of(p.name), not net.no_weight_decay(p.name), net.layer_id(p.name))
            for p in net.get_parameters()}


@pytest.mark.parametrize("model", list(MODELS))
def test_every_parameter_has_its_group_weight_decay_and_layer_id(model):
    net = MODELS[model]()
    assert groups_of(net) == expected_groups(model)
    for p in net.get_parameters():  # the bare-name functions say what the model says
        group = param_group(p.name)
        assert group == net.group_of(p.name) and layer_id(p.name, 2) == net.layer_id(p.name)
        assert no_weight_decay(p.name) == net.no_weight_decay(p.name)
        assert is_embedding(p.name) == (group.kind == "embedding") and is_head(p.name) == (group.kind == "head")
        assert block_index(p.name) == group.block


def test_lora_adapters_sit_in_their_block_decay_and_target_the_blocks_dense_layers():
    from ms_vit.train.lora import add_lora

    net = ms_vit.create_model(TINY)
    adapted = add_lora(net, rank=2, targets=("qkv", "proj", "mlp"))
    assert adapted == [f"transformer.layers.{i}.{sub}" for i in range(2)
                       for sub in ("0.cell.1.qkv", "0.cell.1.out", "1.cell.1.dense1", "1.cell.1.dense2")]
    assert net.block_dense_paths(1, ("proj", "fc2")) == ["transformer.layers.1.0.cell.1.out",
                                                           "transformer.layers.1.1.cell.1.dense2"]
    adapters = {name: group for name, group in groups_of(net).items() if name.endswith((".lora_a", ".lora_b"))}
    assert len(adapters) == 2 * 4 * 2
    for name, group in adapters.items():
        i = int(name.split(".")[2])
        assert group == ("block", i, True, i + 1), name
    assert add_lora(ms_vit.create_model(TINY), rank=2) == [
        f"transformer.layers.{i}.0.cell.1.{sub}" for i in range(2) for sub in ("qkv", "out")]  # the default targets


def _mode(net, mode, **values):
    from ms_vit.train.modes import apply_mode

    cfg = SimpleNamespace(finetune_mode=mode, freeze_blocks=0, lora_rank=2, lora_alpha=4.0, lora_dropout=0.0,
                          lora_targets=["qkv", "proj"])
    vars(cfg).update(values)
    apply_mode(net, cfg)
    return {p.name for p in net.trainable_params()}


def test_each_mode_trains_the_groups_it_names():
    names = {p.name for p in MODELS["dinov2_reg"]().get_parameters()}
    head, top = {"dense.weight", "dense.bias"}, {"norm.gamma", "norm.beta"}
    embeddings = {"cls", "pos_embedding", "register_tokens", "patch_embedding.conv.weight", "patch_embedding.conv.bias"}
    block0 = {n for n in names if n.startswith("transformer.layers.0.")}
    assert _mode(MODELS["dinov2_reg"](), "linear") == head
    assert _mode(MODELS["dinov2_reg"](), "frozen", freeze_blocks=0) == names - embeddings
    assert _mode(MODELS["dinov2_reg"](), "frozen", freeze_blocks=1) == names - embeddings - block0
    assert _mode(MODELS["dinov2_reg"](), "frozen", freeze_blocks=2) == head | top
    lora = _mode(MODELS["dinov2_reg"](), "lora")
    assert lora == head | {f"transformer.layers.{i}.0.cell.1.{sub}.lora_{ab}" for i in range(2)
                           for sub in ("qkv", "out") for ab in "ab"}
    # TokenLearner and TokenFuser sit outside the blocks: frozen mode keeps them trainable, linear and lora do not.
    learner = {n for n in expected_groups("token_learner") if ".token_" in n}
    assert learner <= _mode(MODELS["token_learner"](), "frozen", freeze_blocks=1)
    assert not learner & _mode(MODELS["token_learner"](), "linear")
    assert not learner & _mode(MODELS["token_learner"](), "lora")


def test_frozen_parameters_get_no_weight_decay_no_ema_and_no_optimizer_state(images):
    """A frozen step with strong weight decay and EMA on: what is frozen is in no optimizer group, has no moment and
    no EMA shadow, and stays bitwise equal; the block above the frozen one trains."""
    from ms_vit.config import make_train_config
    from ms_vit.train.optim import create_optimizer
    from ms_vit.train.run import build_train_cell

    ms.set_seed(0)
    net = ms_vit.create_model(TINY, num_register_tokens=2, layer_scale=0.5)  # registers and LayerScale too
    trainable = _mode(net, "frozen", freeze_blocks=1)
    frozen = {p.name for p in net.get_parameters()} - trainable
    assert "register_tokens" in frozen and "transformer.layers.0.0.layer_scale.gamma" in frozen
    cfg = make_train_config({"model": TINY, "finetune_mode": "frozen", "freeze_blocks": 1, "optimizer": "adamw",
                             "lr": 1e-2, "epochs": 1, "weight_decay": 0.5, "layer_decay": 0.75, "ema_decay": 0.9})
    assert {p.name for p in create_optimizer(net, cfg, 1).parameters} == trainable
    cell, _ = build_train_cell(net, cfg, num_classes=10, steps_per_epoch=1, amp_level="O0")
    names = {p.name for p in cell.get_parameters()}
    assert {n[len("ema."):] for n in names if n.startswith("ema.") and n != "ema.updates"} == trainable
    copies = {n for n in names for f in frozen if n != f and n.endswith("." + f)}  # moments, EMA shadows
    assert not copies and any(n.endswith(".dense.weight") and n != "dense.weight" for n in names)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    _, overflow, _ = cell(ms.Tensor(images(4)), ms.Tensor(np.arange(4, dtype=np.int32)))
    assert not bool(overflow.asnumpy())
    after = {p.name: p.asnumpy() for p in net.get_parameters()}
    for name in frozen:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name in ("transformer.layers.1.0.cell.1.qkv.weight", "transformer.layers.1.0.layer_scale.gamma",
                 "transformer.layers.1.1.cell.0.beta", "dense.weight"):
        assert not np.array_equal(after[name], before[name]), name


def test_frozen_blocks_stop_the_gradient_after_the_last_frozen_block_only(tiny_net, images):
    """freeze_blocks 1 of 2: block 0 and the embeddings get no gradient, block 1 and the head do."""
    x = ms.Tensor(images(2))
    params = ms.ParameterTuple(tiny_net.get_parameters())

    def gradients(frozen_blocks):
        tiny_net.transformer.frozen_blocks = frozen_blocks

        def total(inp):
            return tiny_net(inp).sum()

        to_input, to_params = ms.grad(total, grad_position=0, weights=params)(x)
        return float(np.abs(to_input.asnumpy()).max()), {p.name: float(np.abs(g.asnumpy()).max())
                                                          for p, g in zip(params, to_params)}

    below = [p.name for p in params if tiny_net.group_of(p.name).kind == "embedding"
             or tiny_net.group_of(p.name).block == 0]
    above = [p.name for p in params if p.name not in below]
    assert len(below) == 4 + 12 and len(above) == 12 + 4
    to_input, to_params = gradients(0)
    assert to_input > 0 and all(to_params[n] > 0 for n in below + above)
    to_input, to_params = gradients(1)
    assert to_input == 0 and all(to_params[n] == 0 for n in below)
    assert all(to_params[n] > 0 for n in above), [n for n in above if not to_params[n] > 0]


def test_lora_merge_is_w_plus_scaled_b_a_and_gives_the_adapted_models_logits(images):
    from ms_vit.train.lora import add_lora, merged_parameters

    ms.set_seed(0)
    net = ms_vit.create_model(TINY)
    rank, alpha = 2, 6.0
    add_lora(net, rank=rank, alpha=alpha, targets=("qkv", "proj", "mlp"))
    params = {p.name: p for p in net.get_parameters()}
    rng = np.random.default_rng(0)
    for name, param in params.items():
        if name.endswith(".lora_b"):  # B starts at zero: give the update something to add
            param.set_data(ms.Tensor(rng.standard_normal(param.shape).astype(np.float32) * 0.1))
    merged = {item["name"]: item["data"].asnumpy() for item in merged_parameters(net)}
    assert set(merged) == {n for n in params if not n.endswith((".lora_a", ".lora_b"))}
    layers = [n[:-len(".lora_a")] for n in params if n.endswith(".lora_a")]
    assert len(layers) == 2 * 4
    for layer in layers:
        w, a, b = (params[f"{layer}.{part}"].asnumpy() for part in ("weight", "lora_a", "lora_b"))
        want = w.astype(np.float64) + (alpha / rank) * (b.astype(np.float64) @ a.astype(np.float64))
        np.testing.assert_allclose(merged[f"{layer}.weight"], want, rtol=1e-5, atol=1e-6, err_msg=layer)
        assert not np.allclose(want, w)
    for name in set(merged) - {f"{layer}.weight" for layer in layers}:
        np.testing.assert_array_equal(merged[name], params[name].asnumpy(), err_msg=name)
    adapted_logits = _logits(net, images(4))
    plain = ms_vit.create_model(TINY)
    _load(plain, {n: params[n].asnumpy() for n in merged})
    assert not np.allclose(_logits(plain, images(4)), adapted_logits, atol=1e-3)  # the adapters change the model
    _load(plain, merged)
    np.testing.assert_allclose(_logits(plain, images(4)), adapted_logits, atol=1e-5)


def _load(net, values: dict) -> None:
    ms.load_param_into_net(net, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in values.items()})


def _logits(net, x):
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()
