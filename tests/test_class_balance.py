"""class_balance (data/balance.py): the class weights, the sampler's draw (uniform classes on a 10:1 folder,
reproducible per (seed, epoch), sharded, exact on resume), the loss weights' wiring in full and linear runs, and the
keys' validation."""

import os

import numpy as np
import pytest
from conftest import TINY, make_image_folder, tiny_config, train_tiny
from ms_vit.config import make_train_config
from ms_vit.data import balance
from ms_vit.data import folder as data
from ms_vit.errors import ConfigError

# 1,000 images of class 0 and 100 of class 1 (10:1), as labels only: the sampler's draw needs no image.
LABELS = np.array([0] * 1000 + [1] * 100)


def config(**values):
    return make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "data_dir": "unused",
                              "class_balance": "sampler", **values})


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory):
    """A 10:1 folder: 20 blue and 2 red training images (and 2 val images each)."""
    root = tmp_path_factory.mktemp("balance") / "data"
    make_image_folder(root, classes=("blue",), n_train=20, n_val=2, size=24)
    make_image_folder(root, classes=("red",), n_train=2, n_val=2, size=24, seed=1)
    return str(root)


def test_weights_are_inverse_or_sqrt_frequency_with_mean_one_over_the_images():
    counts = np.array([1000, 100, 0, 400])
    inverse = balance.class_weights(counts, "inverse")
    np.testing.assert_allclose(inverse[[0, 1, 3]] * counts[[0, 1, 3]], inverse[0] * 1000)  # each class the same mass
    assert inverse[2] == 0.0  # no images, never drawn
    sqrt = balance.class_weights(counts, "sqrt")
    np.testing.assert_allclose(sqrt[1] / sqrt[0], np.sqrt(10.0))
    for weights in (inverse, sqrt):
        assert abs((weights * counts).sum() / counts.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(balance.class_weights([7, 7, 7]), 1.0)  # balanced: the plain loss
    assert balance.imbalance_ratio(counts) == 10.0


def test_sampler_draws_the_classes_of_a_10_to_1_set_equally_often():
    counts = np.zeros(2)
    for epoch in range(20):
        order = data.epoch_indices(len(LABELS), config(), epoch, labels=LABELS)
        assert len(order) == len(LABELS)  # an epoch is as long as without the sampler
        drawn = np.bincount(LABELS[order], minlength=2)
        # Binomial(1100, 1/2): standard deviation 16.6; six of them
        assert abs(drawn[1] - 550) < 100, drawn
        counts += drawn
    assert abs(counts[1] / counts.sum() - 0.5) < 0.02  # 22,000 draws: six standard deviations
    sqrt = data.epoch_indices(len(LABELS), config(class_balance_weights="sqrt", seed=3), 0, labels=LABELS)
    share = np.mean(LABELS[sqrt] == 1)  # expected sqrt(100) / (sqrt(1000) + sqrt(100)) = 0.240
    assert abs(share - 0.240) < 6 * np.sqrt(0.24 * 0.76 / 1100)
    plain = data.epoch_indices(len(LABELS), config(class_balance="none"), 0)
    assert np.bincount(LABELS[plain]).tolist() == [1000, 100]  # without it: each image once


def test_sampler_depends_only_on_seed_and_epoch():
    draw = lambda seed, epoch: data.epoch_indices(len(LABELS), config(seed=seed), epoch, labels=LABELS)  # noqa: E731
    np.testing.assert_array_equal(draw(0, 4), draw(0, 4))
    assert not np.array_equal(draw(0, 4), draw(0, 5))
    assert not np.array_equal(draw(0, 4), draw(1, 4))
    assert len(np.unique(draw(0, 4))) < len(LABELS)  # with replacement


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_ranks_take_disjoint_equal_slices_of_one_global_draw(world):
    cfg = config(batch_size=12)
    weights = balance.class_weights(np.bincount(LABELS), "inverse")
    whole = balance.weighted_draw(LABELS, weights, cfg.seed, 2)
    per_rank = len(LABELS) // world
    shards, places = [], []
    for rank in range(world):
        indices, positions = data.epoch_indices(len(LABELS), cfg, 2, rank, world, labels=LABELS, with_positions=True)
        assert len(indices) == per_rank
        np.testing.assert_array_equal(indices, whole[positions])
        shards.append(indices)
        places.append(positions)
    assert sorted(np.concatenate(places).tolist()) == list(range(per_rank * world))  # disjoint, together all
    np.testing.assert_array_equal(np.stack(shards, 1).reshape(-1), whole[: per_rank * world])


def test_sampler_never_draws_excluded_images_and_weighs_the_readable_ones():
    exclude = set(range(1000, 1090))  # 90 of the 100 minority images unreadable: 10 left, 1000:10
    order = data.epoch_indices(len(LABELS), config(), 0, exclude=exclude, labels=LABELS)
    assert len(order) == len(LABELS) - len(exclude) and not set(order.tolist()) & exclude
    assert abs(np.mean(LABELS[order] == 1) - 0.5) < 0.1


def rows(dataset):
    """(images, labels) of every row of a training dataset, in order."""
    images, labels = [], []
    for image, label in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def test_sampler_pipeline_resumes_exactly_and_repeats_get_their_own_crop(lopsided, tmp_path):
    cfg = tiny_config(lopsided, tmp_path, class_balance="sampler", drop_remainder=False, crop_scale=[0.3, 1.0],
                      seed=5)
    train = os.path.join(lopsided, "train")
    index = {"blue": 0, "red": 1}
    images, labels = rows(data.train_dataset(train, index, cfg, epoch=1))
    assert len(labels) == 22 and 6 <= (labels == 1).sum() <= 16  # 10:1 on disk, about 1:1 drawn
    rest_images, rest_labels = rows(data.train_dataset(train, index, cfg, epoch=1, skip=8))  # two batches done
    np.testing.assert_array_equal(rest_labels, labels[8:])
    np.testing.assert_array_equal(rest_images, images[8:])  # the same images with the same crops and flips
    order = data.epoch_indices(22, cfg, 1, labels=np.array([0] * 20 + [1] * 2))
    np.testing.assert_array_equal(labels, np.array([0] * 20 + [1] * 2)[order])
    first, again = [np.flatnonzero(order == i)[:2] for i in (20, 21) if (order == i).sum() >= 2][0]
    assert np.abs(images[first] - images[again]).max() > 0.1  # one red image drawn twice, cropped twice


def test_cifar_with_the_sampler_and_unknown_values_are_one_line():
    for values, fragment in [({"class_balance": "oversample"}, "class_balance must be one of none, sampler, loss"),
                             ({"class_balance_weights": "log"}, "class_balance_weights must be one of inverse, sqrt"),
                             ({"dataset": "cifar10", "class_balance": "sampler"},
                              "class_balance sampler draws from class folders")]:
        with pytest.raises(ConfigError) as err:
            make_train_config(values)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    from ms_vit.config.document import parse_config

    cfg = parse_config(["--class_balance", "loss", "--class_balance_weights", "sqrt"])
    assert (cfg.class_balance, cfg.class_balance_weights) == ("loss", "sqrt")


def test_sampler_needs_labels():
    with pytest.raises(ConfigError, match="class_balance sampler needs the class of every training image"):
        data.epoch_indices(len(LABELS), config(), 0)


def test_linear_mode_draws_from_the_cached_features_labels(lopsided, pretrained, tmp_path, monkeypatch):
    drawn = []
    real = balance.weighted_draw

    def spy(labels, weights, seed, epoch, exclude=()):
        order = real(labels, weights, seed, epoch, exclude)
        drawn.append(np.asarray(labels)[order])
        return order

    monkeypatch.setattr(balance, "weighted_draw", spy)
    lines = []
    train_tiny(lopsided, tmp_path / "out", log=lines.append, pretrained=pretrained, finetune_mode="linear",
               class_balance="sampler", epochs=1, drop_remainder=False)
    assert len(drawn) == 1 and len(drawn[0]) == 22  # the epoch's draw, over the cached features' labels
    assert 4 <= drawn[0].sum() <= 18  # the minority drawn about half the time (2 of 22 on disk)
    assert any(line.startswith("class_balance sampler (inverse frequency): class weights 0.55..5.5") for line in lines)


def recorded_class_weights(monkeypatch) -> list:
    """The class_weights of every training loss built from now on (the list fills as runs build them)."""
    from ms_vit.train import loss

    given = []

    class Recording(loss.CrossEntropySmooth):
        def __init__(self, *args, class_weights=None, **kwargs):
            given.append(class_weights)
            super().__init__(*args, class_weights=class_weights, **kwargs)

    monkeypatch.setattr(loss, "CrossEntropySmooth", Recording)
    return given


def test_loss_weights_reach_the_linear_probes_loss(lopsided, pretrained, tmp_path, monkeypatch):
    given = recorded_class_weights(monkeypatch)
    lines = []
    train_tiny(lopsided, tmp_path / "linear", log=lines.append, pretrained=pretrained, finetune_mode="linear",
               class_balance="loss", class_balance_weights="sqrt", epochs=1)
    # sqrt(20) and sqrt(2) inverse, scaled to mean 1 over 22 images
    expected = np.array([1 / np.sqrt(20), 1 / np.sqrt(2)]) * 22 / (20 / np.sqrt(20) + 2 / np.sqrt(2))
    np.testing.assert_allclose(given[-1], expected)
    assert any(line.startswith("class_balance loss (square-root inverse frequency)") for line in lines)


def test_loss_weights_train_a_full_run_with_mixup(lopsided, tmp_path, monkeypatch):
    """The weights with soft targets, compiled in graph mode, in the engine's step."""
    given = recorded_class_weights(monkeypatch)
    result = train_tiny(lopsided, tmp_path / "full", class_balance="loss", epochs=1, mixup_alpha=0.4)
    np.testing.assert_allclose(given[-1], np.array([1 / 20, 1 / 2]) * 22 / 2)
    assert np.isfinite(float(result.last["train_loss"]))


def test_the_log_line_says_what_was_taken_or_hints_at_the_key():
    assert balance.describe("sampler", "inverse", [20, 2]) == ("class_balance sampler (inverse frequency): class "
                                                               "weights 0.55..5.5 (largest/smallest class 10.0:1)")
    assert balance.describe("none", "inverse", [20, 2]).startswith(
        "classes are imbalanced (largest/smallest class 10.0:1): --class_balance sampler (or loss)")
    assert balance.describe("none", "inverse", [12, 10, 12]) == ""  # balanced enough: nothing to say
