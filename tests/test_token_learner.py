"""TokenLearner V1.1 and TokenFuser: shapes, fewer MACs, training, checkpoints, options."""

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY
from mindspore import nn

import ms_vit
from ms_vit.models.complexity import stage_table, total_macs
from ms_vit.config import PRESETS, ViTConfig
from ms_vit.errors import ConfigError
from ms_vit.models.token_learner import TokenFuser, TokenLearner


def images(batch=2, side=32, seed=0):
    return ms.Tensor(np.random.default_rng(seed).standard_normal((batch, 3, side, side)).astype(np.float32))


def test_token_learner_makes_s_tokens_as_weighted_means_of_the_patches():
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 16, 32)).astype(np.float32))
    tokens, weights = TokenLearner(32, 8)(x)
    assert tokens.shape == (2, 8, 32) and weights.shape == (2, 8, 16)
    w = weights.asnumpy()
    assert np.allclose(w.sum(-1), 1, atol=1e-6) and (w >= 0).all()
    assert np.allclose(tokens.asnumpy(), w @ x.asnumpy(), atol=1e-5)
    fused = TokenFuser(32, 8)(tokens, x)
    assert fused.shape == (2, 16, 32)


@pytest.mark.parametrize("fuser", [False, True])
def test_model_shapes_with_token_learner(fuser):
    net = ms_vit.create_model("vit_tiny_test", num_classes=5, token_learner_tokens=3, token_learner_layer=1,
                              token_fuser=fuser, pool="mean" if fuser else "cls")
    x = images()
    assert net(x).shape == (2, 5)
    tokens, attentions = net.forward_features(x)
    assert tokens.shape == ((2, 17, 32) if fuser else (2, 4, 32))  # class token + 16 patches, or + 3 learned
    assert [a.shape for a in attentions] == [(2, 4, 17, 17), (2, 4, 4, 4)]
    logits, maps = ms_vit.AttentionOutput(net)(x)
    assert maps.shape == (1, 2, 4, 17, 17)  # the blocks before TokenLearner: maps over the image's patches
    assert sum(p.size for p in net.get_parameters()) == net.config.num_parameters == sum(
        r[1] for r in stage_table(net.config))


def test_token_learner_cuts_the_macs_of_vit_b():
    base = ViTConfig(**PRESETS["vit_b_16"])
    learned = ViTConfig(**{**PRESETS["vit_b_16"], "token_learner_tokens": 8, "token_learner_layer": 6})
    fused = ViTConfig(**{**PRESETS["vit_b_16"], "token_learner_tokens": 8, "token_learner_layer": 6,
                         "token_fuser": True, "pool": "mean"})
    assert total_macs(learned) < 0.55 * total_macs(base)  # 6 of 12 blocks on 9 tokens instead of 197
    assert total_macs(learned) < total_macs(fused) < total_macs(base)
    assert learned.num_parameters > base.num_parameters  # the module adds parameters, as seed 002 notes
    assert learned.learner_after == 6 and ViTConfig(**{**PRESETS["vit_b_16"], "token_learner_tokens": 8}).learner_after == 6


def test_a_training_step_reaches_the_token_learner():
    from ms_vit.train.step import TrainStep

    ms.set_seed(0)
    net = ms_vit.create_model("vit_tiny_test", num_classes=3, token_learner_tokens=4, token_fuser=True, pool="mean")
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params() if "token_" in p.name}
    cell = TrainStep(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")),
                     nn.Adam(net.trainable_params(), 1e-2))
    cell.set_train(True)
    loss, overflow, _ = cell(images(4), ms.Tensor(np.array([0, 1, 2, 0], np.int32)))
    assert np.isfinite(float(loss.asnumpy())) and not bool(overflow.asnumpy())
    after = {p.name: p.asnumpy() for p in net.trainable_params() if "token_" in p.name}
    assert before and all(not np.array_equal(before[k], after[k]) for k in before)


def test_a_plain_checkpoint_loads_into_a_token_learner_model(tmp_path):
    plain = ms_vit.create_model("vit_tiny_test", num_classes=5)
    ms.save_checkpoint(plain, str(tmp_path / "plain.ckpt"))
    net = ms_vit.create_model("vit_tiny_test", num_classes=5, token_learner_tokens=4,
                              pretrained=str(tmp_path / "plain.ckpt"))
    report = net.load_report
    assert report.fresh and all(n.startswith("transformer.token_learner.") for n in report.fresh)
    assert any("TokenLearner" in line for line in report.lines())
    qkv = "transformer.layers.0.0.cell.1.qkv.weight"
    assert np.array_equal(dict(net.parameters_and_names())[qkv].asnumpy(),
                          dict(plain.parameters_and_names())[qkv].asnumpy())


def test_its_own_checkpoint_round_trips(tmp_path):
    from ms_vit.checkpoint.save import save_checkpoint

    net = ms_vit.create_model("vit_tiny_test", num_classes=5, token_learner_tokens=4)
    save_checkpoint(net, str(tmp_path / "tl.ckpt"), meta={"format": "ms_vit", "model": net.config.to_dict(),
                                                          "model_name": "vit_tiny_test"})
    again = ms_vit.from_pretrained(str(tmp_path / "tl.ckpt"))
    assert again.config.token_learner_tokens == 4 and not again.load_report.fresh
    x = images()
    assert np.allclose(again(x).asnumpy(), net(x).asnumpy(), atol=1e-6)


@pytest.mark.parametrize("options, fragment", [
    ({"token_learner_tokens": 4, "token_learner_layer": 2}, "at least one block on each side"),
    ({"token_fuser": True}, "token_fuser needs TokenLearner"),
    ({"token_learner_tokens": 4, "token_fuser": True}, "set pool 'mean'"),
    ({"token_learner_tokens": -1}, "non-negative"),
])
def test_bad_token_learner_options(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ViTConfig(**{**PRESETS[TINY], **options})
