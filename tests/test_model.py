import os

import mindspore as ms
import numpy as np
import pytest
from conftest import FIXTURES, TINY, logits_of
from reference import params_of, vit_forward

import ms_vit
from ms_vit.models.vit import AttentionOutput, FeatureExtractor


def tutorial_tree():
    with open(os.path.join(FIXTURES, "tutorial_vit_b_16_params.tsv")) as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle if not line.startswith("#")]
    return {name: tuple(int(n) for n in shape.split(",")) for name, shape in rows}


def test_vit_b_16_has_the_tutorials_parameter_names_and_shapes(vit_b):
    ours = {p.name: tuple(p.shape) for p in vit_b.get_parameters()}
    assert ours == tutorial_tree()
    assert sum(p.size for p in vit_b.get_parameters()) == 86_567_656


def test_vit_b_16_forward(vit_b, images):
    out = logits_of(vit_b, images(1, 224))
    assert out.shape == (1, 1000) and np.isfinite(out).all()


def test_tutorial_network_weights_give_the_tutorials_logits():
    """tutorial_tiny.ckpt and its logits were written by the tutorial's own ViT class (seed 003), tiny config."""
    golden = np.load(os.path.join(FIXTURES, "tutorial_tiny_io.npz"))
    for impl in ("conv", "matmul"):
        net = ms_vit.create_model(TINY, num_heads=4, patch_impl=impl,
                                  pretrained=os.path.join(FIXTURES, "tutorial_tiny.ckpt"))
        assert not net.load_report.head_reset and not net.load_report.resized
        np.testing.assert_allclose(logits_of(net, golden["x"]), golden["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", [
    {},
    {"gelu": "erf", "layer_norm_eps": 1e-6},
    {"pool": "mean", "layer_norm_eps": 1e-12, "image_size": 48, "patch_size": 16},
])
def test_matches_an_independent_numpy_forward(overrides, images):
    ms.set_seed(1)
    net = ms_vit.create_model(TINY, **overrides)
    cfg = net.config
    x = images(3, cfg.image_size)
    expected = vit_forward(params_of(net), x, num_heads=cfg.num_heads, eps=cfg.layer_norm_eps, gelu_form=cfg.gelu,
                           pool=cfg.pool)
    np.testing.assert_allclose(logits_of(net, x), expected, atol=2e-5, rtol=0)


def test_graph_and_pynative_give_the_same_logits(tiny_net, images):
    from ms_vit.evaluate.timing import compare_modes

    assert compare_modes(tiny_net, batch=3) <= 1e-5


@pytest.mark.parametrize("batch", [1, 5])
def test_any_batch_size(tiny_net, images, batch):
    x = images(5, 32)
    full = logits_of(tiny_net, x)
    np.testing.assert_allclose(logits_of(tiny_net, x[:batch]), full[:batch], atol=1e-5)


def test_patch_impls_agree(images):
    ms.set_seed(2)
    conv = ms_vit.create_model(TINY, patch_impl="conv")
    matmul = ms_vit.create_model(TINY, patch_impl="matmul")
    ms.load_param_into_net(matmul, {p.name: p for p in conv.get_parameters()}, strict_load=True)
    x = images(2, 32)
    np.testing.assert_allclose(logits_of(matmul, x), logits_of(conv, x), atol=1e-5)


def test_set_train_switches_dropout(images):
    ms.set_seed(3)
    net = ms_vit.create_model(TINY, drop_rate=0.3, attention_drop_rate=0.3, drop_path_rate=0.3)
    x = ms.Tensor(images(2, 32))
    net.set_train(True)
    a, b = net(x).asnumpy(), net(x).asnumpy()
    assert np.abs(a - b).max() > 1e-4
    net.set_train(False)
    c, d = net(x).asnumpy(), net(x).asnumpy()
    np.testing.assert_array_equal(c, d)


def test_attention_maps_and_features_share_the_model(tiny_net, images):
    x = ms.Tensor(images(2, 32))
    tiny_net.set_train(False)
    logits, maps = AttentionOutput(tiny_net)(x)
    np.testing.assert_allclose(logits.asnumpy(), tiny_net(x).asnumpy(), atol=1e-6)
    assert maps.shape == (2, 2, 4, 17, 17)  # layers, batch, heads, tokens, tokens
    np.testing.assert_allclose(maps.asnumpy().sum(-1), 1.0, atol=1e-5)
    features = FeatureExtractor(tiny_net)(x)
    assert features.shape == (2, 32)
    # Same parameters, not a copy: the wrappers add none.
    assert [p.name for p in AttentionOutput(tiny_net).get_parameters()] == [p.name for p in tiny_net.get_parameters()]
