"""ms_vit.evaluate.metrics against scikit-learn's top_k_accuracy_score, log_loss and confusion_matrix on fixed logits."""

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as sk

from ms_vit.evaluate import metrics

K = 7
ABSENT = 5  # a class no label names (it is still predicted, by the rows where its logit is highest)

# Rows with ties whose hits do not depend on how a sort orders tied logits: a tie the label is in lies wholly
# inside or wholly outside the top k for every k tested (a tie holding the label across the k boundary is
# np.argsort's choice; test_ties_give_the_same_top_1_to_hits_and_predictions covers that case).
TIED = [([3, 1, 0, 0, 0, -1, 2], 0),   # tied logits below the label
        ([3, 1, 0, 0, 0, -1, 2], 6),
        ([2, 1, 1, 0, 0, 0, -1], 2),   # the label in a tie at ranks 2-3
        ([5, 4, 3, 0, 2, 2, 0], 3),    # the label in a tie below the top 5
        ([5, 4, 3, 0, 2, 2, 0], 4),    # the label in a tie at ranks 4-5
        ([0, 3, 3, 3, 1, 0, 2], 6),    # a tie across the top-1 boundary, the label below it
        ([0, 0, 0, 0, 0, 9, 1], 6)]    # the absent class predicted


def fixed_logits():
    rng = np.random.default_rng(0)
    logits = np.concatenate([np.array([row for row, _ in TIED], np.float64), rng.standard_normal((40, K)) * 3])
    labels = np.concatenate([[label for _, label in TIED], rng.choice([c for c in range(K) if c != ABSENT], 40)])
    return logits, labels


def expected_hits(logits, labels, k):
    """Hits by counting: the label is in the top k when fewer than k logits beat it and its tie fits too."""
    own = logits[np.arange(len(labels)), labels][:, None]
    above, tied = (logits > own).sum(axis=1), (logits == own).sum(axis=1)
    assert not ((above < k) & (above + tied > k)).any(), "a row's hit depends on the order of ties"
    return above + tied <= k


@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_hits_are_scikit_learns_top_k_accuracy(k):
    logits, labels = fixed_logits()
    assert ABSENT not in labels
    hits = metrics.topk_hits(logits, labels, k)
    assert hits.shape == (len(labels),) and hits.dtype == bool
    np.testing.assert_array_equal(hits, expected_hits(logits, labels, k))
    assert hits.sum() == sk.top_k_accuracy_score(labels, logits, k=k, labels=np.arange(K), normalize=False)
    assert metrics.top_k(logits, k).shape == (len(labels), k)


def test_topk_of_more_classes_than_there_are_is_every_class():
    logits, labels = fixed_logits()
    assert metrics.top_k(logits, 5)[:, :1].tolist() == metrics.top_k(logits, 1).tolist()
    assert metrics.top_k(logits[:, :3], 5).shape == (len(labels), 3)
    assert metrics.topk_hits(logits[:, :3], labels % 3, 5).all()


def test_ties_give_the_same_top_1_to_hits_and_predictions():
    logits = np.zeros((K, K))  # every class tied in every row: which one ranks first is np.argsort's choice
    labels = np.arange(K)
    top = metrics.top_k(logits, 1)
    hits = metrics.in_top(top, labels)
    np.testing.assert_array_equal(hits, top[:, 0] == labels)
    assert np.trace(metrics.confusion_matrix(labels, top[:, 0], range(K))) == hits.sum()


def test_cross_entropy_sum_is_scikit_learns_log_loss():
    logits, labels = fixed_logits()
    expected = sk.log_loss(labels, softmax(logits, axis=1), labels=np.arange(K), normalize=False)
    assert metrics.cross_entropy_sum(logits, labels) == pytest.approx(expected, rel=1e-12)
    assert metrics.cross_entropy_sum(logits[:1], labels[:1]) == pytest.approx(-np.log(softmax(logits[0])[0]),
                                                                                rel=1e-12)


def test_cross_entropy_is_stable_for_large_logits_and_computed_in_float64():
    logits, labels = fixed_logits()
    offsets = np.linspace(-1000, 1000, len(labels))[:, None]  # exp() of these overflows float64
    expected = sk.log_loss(labels, softmax(logits, axis=1), labels=np.arange(K), normalize=False)
    assert metrics.cross_entropy_sum(logits + offsets, labels) == pytest.approx(expected, rel=1e-12)
    single = logits.astype(np.float32)
    assert metrics.cross_entropy_sum(single, labels) == metrics.cross_entropy_sum(single.astype(np.float64), labels)
    np.testing.assert_array_equal(metrics.log_softmax(single), metrics.log_softmax(single.astype(np.float64)))


def test_confusion_matrix_is_scikit_learns_with_an_other_column():
    logits, labels = fixed_logits()
    predicted = metrics.top_k(logits, 1)[:, 0]
    assert ABSENT in predicted
    everything = metrics.confusion_matrix(labels, predicted, range(K))
    np.testing.assert_array_equal(everything[:, :-1], sk.confusion_matrix(labels, predicted, labels=np.arange(K)))
    assert not everything[:, -1].any() and not everything[ABSENT].any()  # the absent class: a row of zeros
    # Without the absent class, its predictions count in the last column ("other"), by their true class.
    classes = [6, 0, 1, 2, 3, 4]  # any order: rows and columns follow it
    some = metrics.confusion_matrix(labels, predicted, classes)
    assert some.shape == (6, 7) and some.dtype == np.int64
    np.testing.assert_array_equal(some[:, :-1], sk.confusion_matrix(labels, predicted, labels=classes))
    np.testing.assert_array_equal(some[:, -1], [((labels == c) & (predicted == ABSENT)).sum() for c in classes])
    assert some.sum() == len(labels)


def test_a_label_outside_the_classes_is_an_error():
    with pytest.raises(KeyError):
        metrics.confusion_matrix([0, 3], [0, 0], [0, 1])


NEVER = 3  # a class with images that no row predicts


def fixed_predictions():
    """The fixed logits' labels and top-1 predictions, with class NEVER never predicted (its rows moved to class 4)
    and ABSENT predicted without ever being a label."""
    logits, labels = fixed_logits()
    predicted = metrics.top_k(logits, 1)[:, 0]
    predicted[predicted == NEVER] = 4
    assert NEVER in labels and NEVER not in predicted and ABSENT in predicted and ABSENT not in labels
    return labels, predicted


def test_per_class_precision_recall_f1_are_scikit_learns_with_zero_division_0():
    labels, predicted = fixed_predictions()
    ours = metrics.precision_recall_f1(labels, predicted, range(K))
    theirs = sk.precision_recall_fscore_support(labels, predicted, labels=np.arange(K), zero_division=0)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    precision, recall, f1, support = ours
    assert precision[NEVER] == 0 and recall[NEVER] == 0 and f1[NEVER] == 0 and support[NEVER] > 0
    assert recall[ABSENT] == 0 and support[ABSENT] == 0 and precision[ABSENT] == 0
    # A subset of the classes: predictions of the others count against recall only.
    some = [6, 0, 1, 2, 3]
    for a, b in zip(metrics.precision_recall_f1(labels, predicted, some),
                    sk.precision_recall_fscore_support(labels, predicted, labels=some, zero_division=0)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def test_macro_weighted_f1_and_balanced_accuracy_are_scikit_learns():
    labels, predicted = fixed_predictions()
    seen = np.unique(labels)
    averages = metrics.class_averages(labels, predicted, range(K))  # ABSENT has no images: left out
    assert averages["macro_f1"] == pytest.approx(
        sk.f1_score(labels, predicted, labels=seen, average="macro", zero_division=0), abs=1e-15)
    assert averages["weighted_f1"] == pytest.approx(
        sk.f1_score(labels, predicted, labels=seen, average="weighted", zero_division=0), abs=1e-15)
    with pytest.warns(UserWarning):  # scikit-learn warns of ABSENT, predicted but never a label
        balanced = sk.balanced_accuracy_score(labels, predicted)
    assert averages["balanced_accuracy"] == pytest.approx(balanced, abs=1e-15)
    # The never-predicted class pulls the macro average down (its F1 is 0, not left out).
    assert averages["macro_f1"] < sk.f1_score(labels, predicted, labels=[c for c in seen if c != NEVER],
                                              average="macro", zero_division=0)


def two_class_logits(confidences):
    """Logits of 2 classes whose softmax gives class 0 the probability ``confidences``."""
    p = np.asarray(confidences, np.float64)
    return np.log(np.stack([p, 1 - p], axis=1))


def test_ece_against_a_hand_computed_value():
    # Bins of width 1/15: (14/15, 1] holds 0.95 (right) and 0.95 (wrong): |0.5 - 0.95| * 2/5 = 0.18;
    # (8/15, 9/15] holds 0.55 and 0.58, both right: |1 - 0.565| * 2/5 = 0.174; (11/15, 12/15] holds 0.75, wrong:
    # 0.75 * 1/5 = 0.15. ECE = 0.504.
    logits = two_class_logits([0.95, 0.95, 0.55, 0.58, 0.75])
    labels = np.array([0, 1, 0, 0, 1])
    result = metrics.reliability(logits, labels)
    assert result["ece"] == pytest.approx(0.504, abs=1e-12)
    assert metrics.expected_calibration_error(logits, labels) == result["ece"]
    bins = result["bins"]
    assert len(bins) == 15 and bins[0]["lower"] == 0 and bins[-1]["upper"] == 1
    assert [b["count"] for b in bins] == [0] * 8 + [2, 0, 0, 1, 0, 0, 2]
    assert bins[8]["confidence"] == pytest.approx(0.565) and bins[8]["accuracy"] == 1.0
    assert bins[14]["accuracy"] == 0.5 and bins[0]["confidence"] is None and bins[0]["accuracy"] is None


def test_ece_bins_are_closed_on_the_right_and_perfect_calibration_is_zero():
    # A confidence of exactly 1 falls in the last bin; 0.6 (= 9/15) in the bin (8/15, 9/15], not the next one.
    result = metrics.reliability(np.array([[0.0, -1e9], [np.log(0.6), np.log(0.4)]]), np.array([0, 0]))
    counts = [b["count"] for b in result["bins"]]
    assert counts[14] == 1 and counts[8] == 1 and sum(counts) == 2
    # 0.75 confident and right 3 times in 4: calibrated, ECE 0.
    logits = two_class_logits([0.75] * 4)
    assert metrics.expected_calibration_error(logits, np.array([0, 0, 0, 1])) == pytest.approx(0, abs=1e-12)
