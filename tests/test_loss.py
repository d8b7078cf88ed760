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


# class_balance: loss. Weights as data.balance makes them (mean 1 over the images), not a round set, so a wrong index
# (label vs position, one class off) shows.
WEIGHTS = np.array([0.4, 2.5, 1.0, 0.7, 1.9], np.float32)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
@pytest.mark.parametrize("s", [0.0, 0.1])
def test_class_weights_multiply_each_sample_by_its_true_class_weight(batch, mode, s):
    ms.set_context(mode=mode)
    logits, labels = batch
    loss = CrossEntropySmooth(smooth_factor=s, num_classes=5, class_weights=WEIGHTS)(ms.Tensor(logits),
                                                                                      ms.Tensor(labels))
    # by hand: -sum_k t_k log p_k of each sample, times the weight of its label, averaged over the batch
    expected = (reference(logits, smoothed(labels, 5, s)) * WEIGHTS[labels]).mean()
    assert abs(float(loss.asnumpy()) - expected) < 1e-6
    plain = CrossEntropySmooth(smooth_factor=s, num_classes=5)(ms.Tensor(logits), ms.Tensor(labels))
    assert abs(float(plain.asnumpy()) - expected) > 1e-3  # the weights do change the loss


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_class_weights_of_mixed_targets_are_the_target_weighted_class_weights(batch, mode):
    """Mixup/cutmix targets (smoothed one-hots mixed with the reversed batch, as data.mixup makes them): each sample's
    weight is sum_k t_k w_k, lam * w_a + (1 - lam) * w_b plus the smoothing mass's share."""
    from ms_vit.data.mixup import smooth_one_hot

    ms.set_context(mode=mode)
    logits, labels = batch
    one_hot = smooth_one_hot(labels, 5, 0.1)
    lam = 0.7
    mixed = (lam * one_hot + (1 - lam) * one_hot[::-1]).astype(np.float32)
    loss_fn = CrossEntropySmooth(smooth_factor=0.1, num_classes=5, reduction="none", class_weights=WEIGHTS)
    got = loss_fn(ms.Tensor(logits), ms.Tensor(mixed)).asnumpy()
    weight = mixed.astype(np.float64) @ WEIGHTS
    np.testing.assert_allclose(got, reference(logits, mixed) * weight, rtol=1e-6, atol=1e-6)
    unsmoothed = lam * WEIGHTS[labels] + (1 - lam) * WEIGHTS[labels[::-1]]
    np.testing.assert_allclose(weight, 0.9 * unsmoothed + 0.1 / 4 * (WEIGHTS.sum() - unsmoothed), rtol=1e-6)


def test_bad_class_weights():
    with pytest.raises(ValueError, match="class_weights must be 5"):
        CrossEntropySmooth(num_classes=5, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weights"):
        CrossEntropySmooth(num_classes=2, class_weights=[1.0, -1.0])
