import mindspore as ms
import numpy as np
import pytest
from conftest import TINY
from mindspore import nn

import ms_vit
from ms_vit.train.amp import loss_scale_cell, resolve_amp_level
from ms_vit.models.vit import layer_id
from ms_vit.train.optim import lr_schedule, param_groups
from ms_vit.train.step import TrainStep


def test_warmup_then_cosine_per_step():
    """The exact schedule: warmup 1/11 .. 10/11 of the peak, the peak once, cosine to min_lr at the last step."""
    lrs = lr_schedule(1.0, 0.1, steps_per_epoch=10, epochs=5, warmup_epochs=1)
    assert len(lrs) == 50
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 11, rtol=1e-6)
    decay = 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(40) / 39))
    np.testing.assert_allclose(lrs[10:], decay, rtol=1e-6)
    assert lrs[10] == np.float32(1.0) and lrs[-1] == np.float32(0.1)  # the peak and min_lr, exactly
    assert np.count_nonzero(lrs == lrs.max()) == 1


def test_schedule_without_warmup_starts_at_the_peak_and_ends_at_min_lr():
    lrs = lr_schedule(2e-3, 1e-5, steps_per_epoch=7, epochs=3)
    assert len(lrs) == 21 and lrs[0] == np.float32(2e-3) and lrs[-1] == np.float32(1e-5)
    assert np.all(np.diff(lrs) < 0)


def test_no_weight_decay_on_biases_norms_and_tokens():
    net = ms_vit.create_model(TINY)
    no_decay = sorted(p.name for p in net.trainable_params() if net.no_weight_decay(p.name))
    assert "cls" in no_decay and "pos_embedding" in no_decay and "norm.gamma" in no_decay
    assert all(n.endswith((".bias", ".beta", ".gamma")) or n in ("cls", "pos_embedding") for n in no_decay)
    groups = param_groups(net.trainable_params(), np.ones(4, np.float32), 0.05, 1.0, 2)
    by_decay = {g["weight_decay"]: {p.name for p in g["params"]} for g in groups}
    assert by_decay[0.0] == set(no_decay) and "dense.weight" in by_decay[0.05]


def test_layer_decay_scales_lower_layers():
    net = ms_vit.create_model(TINY)
    assert [layer_id(n, 2) for n in ("cls", "transformer.layers.0.0.cell.1.qkv.weight",
                                     "transformer.layers.1.1.cell.0.gamma", "dense.weight")] == [0, 1, 2, 3]
    groups = param_groups(net.trainable_params(), np.ones(3, np.float32), 0.0, 0.5, 2)
    lr_of = {p.name: g["lr"][0] for g in groups for p in g["params"]}
    assert lr_of["dense.weight"] == 1.0 and lr_of["transformer.layers.1.0.cell.1.qkv.weight"] == 0.5
    assert lr_of["transformer.layers.0.0.cell.1.qkv.weight"] == 0.25 and lr_of["cls"] == 0.125


def _step_cell(net, clip=0.0, lr=0.1):
    loss = ms_vit.CrossEntropySmooth(smooth_factor=0.0, num_classes=10)
    return TrainStep(nn.WithLossCell(net, loss), nn.SGD(net.trainable_params(), learning_rate=lr), clip_norm=clip)


def test_gradient_clipping_bounds_the_update(images):
    ms.set_seed(0)
    net = ms_vit.create_model(TINY)
    before = [p.asnumpy().copy() for p in net.trainable_params()]
    x, y = ms.Tensor(images(4) * 10), ms.Tensor(np.arange(4, dtype=np.int32))
    loss, overflow, _ = _step_cell(net, clip=1e-3)(x, y)
    assert not bool(overflow.asnumpy())
    delta = np.sqrt(sum(((p.asnumpy() - b) ** 2).sum() for p, b in zip(net.trainable_params(), before)))
    assert delta == pytest.approx(0.1 * 1e-3, rel=1e-3)  # SGD: lr x clipped global norm


def test_non_finite_gradients_skip_the_step(images):
    net = ms_vit.create_model(TINY)
    before = net.dense.weight.asnumpy().copy()
    x = images(2)
    x[0, 0, 0, 0] = np.nan
    loss, overflow, _ = _step_cell(net)(ms.Tensor(x), ms.Tensor(np.zeros(2, np.int32)))
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(net.dense.weight.asnumpy(), before)


def test_amp_defaults_per_device():
    assert resolve_amp_level("auto", "CPU", gate=lambda: (False, "no avx512_bf16")) == "O0"
    assert resolve_amp_level("auto", "CPU", gate=lambda: (True, "CPU has avx512_bf16")) == "bf16"
    assert resolve_amp_level("auto", "GPU") == "O2" and resolve_amp_level("auto", "Ascend") == "O2"
    assert resolve_amp_level("O1", "CPU") == "O1"
    assert loss_scale_cell("O0", 0.0) is None and loss_scale_cell("O2", 128.0) is None
    assert loss_scale_cell("bf16", 0.0) is None
    assert loss_scale_cell("O2", 0.0).get_loss_scale() == 2.0 ** 24


def test_the_engine_applies_the_scheduled_learning_rate_at_every_step(images):
    """README: the learning rate follows the schedule per step. The engine's own step (build_train_cell, as
    fine_tune builds it) with SGD without momentum or weight decay moves every parameter by exactly
    -lr_t * scale * grad at step t: lr_t the warm-up + cosine value written out here, scale the layer decay of its
    depth (0.5 per block from the head down), grad the loss gradient taken here before the step."""
    from ms_vit.config import make_train_config
    from ms_vit.train.run import build_train_cell

    ms.set_seed(0)
    net = ms_vit.create_model(TINY, num_classes=4)
    lr, low, steps = 0.5, 0.01, 3  # 2 epochs of 3 steps, the first a warm-up
    cfg = make_train_config({"model": TINY, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": lr,
                             "min_lr": low, "warmup_epochs": 1, "epochs": 2, "layer_decay": 0.5,
                             "clip_grad_norm": 0.0, "label_smoothing": 0.1})
    cell, loss_fn = build_train_cell(net, cfg, num_classes=4, steps_per_epoch=steps, amp_level="O0")
    cell.set_train(True)
    params = net.trainable_params()
    gradient = ms.value_and_grad(nn.WithLossCell(net, loss_fn), None, params)
    schedule = [lr * s / 4 for s in (1, 2, 3)] + [low + 0.5 * (lr - low) * (1 + np.cos(np.pi * k / 2))
                                                  for k in (0, 1, 2)]

    def depth(name):  # 0: embeddings, i + 1: block i, 3: final norm and head (2 blocks)
        if name in ("cls", "pos_embedding") or name.startswith("patch_embedding."):
            return 0
        if name.startswith("transformer.layers."):
            return int(name.split(".")[2]) + 1
        return 3

    for t, lr_t in enumerate(schedule):
        x = ms.Tensor(images(4, seed=t))
        y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
        before = [p.asnumpy().copy() for p in params]
        grads = [g.asnumpy() for g in gradient(x, y)[1]]
        _, overflow, _ = cell(x, y)
        assert not bool(overflow.asnumpy())
        checked = 0
        for p, b, g in zip(params, before, grads):
            rate = lr_t * 0.5 ** (3 - depth(p.name))
            want = -rate * g
            step = p.asnumpy() - b
            rounding = 2 * np.finfo(np.float32).eps * np.abs(b).max()  # float32 spacing at the parameter's size
            np.testing.assert_allclose(step, want, rtol=0, atol=1e-3 * np.abs(want).max() + rounding,
                                       err_msg=f"step {t + 1}: {p.name}")
            if np.abs(want).max() > 1e4 * rounding:  # the effective rate as one number, where rounding allows
                assert -(step * g).sum() / (g * g).sum() == pytest.approx(rate, rel=1e-3), (t + 1, p.name)
                checked += 1
        assert checked >= len(params) // 2
