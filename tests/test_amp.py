"""AMP O2: every softmax of the cast network runs in fp32, and attention scales q before q.k^T."""

import mindspore as ms
import numpy as np
from conftest import TINY
from mindspore import ops

import ms_vit
from ms_vit.train.amp import apply_amp
from ms_vit.models.vit import Attention


def test_o2_network_runs_every_softmax_in_fp32(monkeypatch, images):
    """Attention's and TokenLearner's softmax both see fp32 inputs in the O2-cast (fp16) network."""
    ms.set_context(mode=ms.PYNATIVE_MODE)  # PYNATIVE runs construct as Python, so the spy sees each call
    ms.set_seed(0)
    net = ms_vit.create_model(TINY, token_learner_tokens=4, token_learner_layer=1)
    apply_amp(net, "O2")
    net.set_train(False)
    seen = []
    original = ops.softmax

    def spy(x, axis=-1, **kwargs):
        seen.append(x.dtype)
        return original(x, axis, **kwargs)

    monkeypatch.setattr(ops, "softmax", spy)
    logits = net(ms.Tensor(images(2)))
    assert logits.dtype == ms.float16  # the network really is cast
    # 2 attention blocks + TokenLearner, each in fp32
    assert seen == [ms.float32] * 3


def test_o2_attention_scales_q_before_the_product():
    """Scores whose unscaled q.k^T exceeds fp16's 65504 stay finite: q is scaled first."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    dim = 8
    attention = Attention(dim=dim, num_heads=1)
    # q = k = v = x: q.k = 8 * 100^2 = 80,000 overflows fp16; scaled by 8^-0.5 first it is 28,284
    attention.qkv.weight.set_data(ms.Tensor(np.tile(np.eye(dim, dtype=np.float32), (3, 1))))
    attention.out.weight.set_data(ms.Tensor(np.eye(dim, dtype=np.float32)))
    cell = ms.amp.auto_mixed_precision(attention, "O2")
    out, attn = cell(ms.Tensor(np.full((1, 4, dim), 100.0, np.float32)))
    assert np.isfinite(attn.asnumpy().astype(np.float32)).all()
    np.testing.assert_allclose(attn.asnumpy().astype(np.float32), 0.25, atol=1e-3)  # equal scores: uniform
    np.testing.assert_allclose(out.asnumpy().astype(np.float32), 100.0, rtol=1e-2)


def test_o2_network_normalises_every_layer_norm_in_fp32(monkeypatch, images):
    """Every LayerNorm of the O2-cast network (2 blocks x 2, and the final one) normalises fp32 statistics: an fp16
    variance over a wide token overflows or loses the small differences that matter."""
    from ms_vit.models import layers

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    net = ms_vit.create_model(TINY)
    apply_amp(net, "O2")
    net.set_train(False)
    seen = []
    original = layers._Normalize.construct  # _RowNormalize (the CPU default) inherits it

    def spy(self, x, gamma, beta):
        seen.append((x.dtype, gamma.dtype))
        return original(self, x, gamma, beta)

    monkeypatch.setattr(layers._Normalize, "construct", spy)
    assert net(ms.Tensor(images(2))).dtype == ms.float16
    assert seen == [(ms.float32, ms.float32)] * 5
