import mindspore as ms
import numpy as np
import pytest

from ms_vit import CrossEntropySmooth


def reference(logits, targets):
    logits = logits.astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    return -(targets * logp).sum(1)


def smoothed(labels, k, s):
    t = np.full((len(labels), k), s / (k - 1))
    t[np.arange(len(labels)), labels] = 1 - s
    return t


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 5)).astype(np.float32) * 3, rng.integers(0, 5, 6).astype(np.int32)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("s", [0.0, 0.1, 0.4])
def test_integer_labels_match_numpy(batch, mode, s):
    ms.set_context(mode=mode)
    logits, labels = batch
    loss = CrossEntropySmooth(smooth_factor=s, num_classes=5)(ms.Tensor(logits), ms.Tensor(labels))
    assert abs(float(loss.asnumpy()) - reference(logits, smoothed(labels, 5, s)).mean()) < 1e-6


def test_soft_and_one_hot_targets(batch):
    logits, labels = batch
    loss_fn = CrossEntropySmooth(smooth_factor=0.1, num_classes=5, reduction="none")
    one_hot = np.eye(5, dtype=np.float32)[labels]
    np.testing.assert_allclose(loss_fn(ms.Tensor(logits), ms.Tensor(one_hot)).asnumpy(), reference(logits, one_hot),
                               atol=1e-6)
    soft = np.random.default_rng(1).dirichlet(np.ones(5), 6).astype(np.float32)
    np.testing.assert_allclose(loss_fn(ms.Tensor(logits), ms.Tensor(soft)).asnumpy(), reference(logits, soft),
                               atol=1e-6)


def test_reductions_and_fp16_logits(batch):
    logits, labels = batch
    expected = reference(logits, smoothed(labels, 5, 0.1))
    total = CrossEntropySmooth(num_classes=5, reduction="sum")(ms.Tensor(logits), ms.Tensor(labels))
    assert abs(float(total.asnumpy()) - expected.sum()) < 1e-5
    half = CrossEntropySmooth(num_classes=5)(ms.Tensor(logits.astype(np.float16)), ms.Tensor(labels))
    assert half.dtype == ms.float32
    assert abs(float(half.asnumpy()) - reference(logits.astype(np.float16), smoothed(labels, 5, 0.1)).mean()) < 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="smooth_factor"):
        CrossEntropySmooth(smooth_factor=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        CrossEntropySmooth(num_classes=1)
