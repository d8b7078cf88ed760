"""augment.extra_train_ops: the auto-augment, colour jitter and random erasing ops, run in a MindSpore pipeline."""

import numpy as np
import pytest

import mindspore.dataset as ds

from ms_vit.augment import extra_train_ops
from ms_vit.config import make_train_config
from ms_vit.errors import ConfigError


@pytest.fixture
def pipeline_seed():
    """Seed the dataset pipeline for the test and give the previous seed back afterwards."""
    previous = ds.config.get_seed()
    ds.config.set_seed(1234)
    yield
    ds.config.set_seed(previous)


def run_pipeline(ops, images):
    data = ds.NumpySlicesDataset({"image": images}, shuffle=False)
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=1)
    return np.stack([row["image"] for row in data.create_dict_iterator(num_epochs=1, output_numpy=True)])


def uint8_images(count=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_auto_augment_changes_uint8_images_in_a_pipeline(policy, pipeline_seed):
    before, after = extra_train_ops(make_train_config({"auto_augment": policy}))
    assert len(before) == 1 and after == []
    images = uint8_images()
    out = run_pipeline(before, images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert any((o != i).any() for o, i in zip(out, images))


def test_auto_augment_fills_with_the_mean_pixel_and_resamples_with_the_run_interpolation():
    op = extra_train_ops(make_train_config({"auto_augment": "randaugment", "mean": [10.2, 20.6, 300],
                                            "std": [1, 1, 1], "interpolation": "bicubic",
                                            "aa_magnitude": 5, "aa_num_ops": 3}))[0][0]
    from mindspore.dataset import vision

    assert op.fill_value == (10, 21, 255)
    assert op.interpolation == vision.Inter.BICUBIC
    assert (op.num_ops, op.magnitude, op.num_magnitude_bins) == (3, 5, 31)


def test_color_jitter_changes_images_and_zero_adds_no_op(pipeline_seed):
    assert extra_train_ops(make_train_config({"color_jitter": 0.0})) == ([], [])
    before, after = extra_train_ops(make_train_config({"color_jitter": 0.4}))
    assert len(before) == 1 and after == []
    images = np.full((4, 32, 32, 3), (120, 60, 200), np.uint8)  # flat colour: any jitter factor but 1 changes it
    out = run_pipeline(before, images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert any((o != i).any() for o, i in zip(out, images))


def test_color_jitter_is_off_with_auto_augment_as_in_timm():
    before, _ = extra_train_ops(make_train_config({"auto_augment": "trivialaugment", "color_jitter": 0.4}))
    assert [type(op).__name__ for op in before] == ["TrivialAugmentWide"]


def test_random_erasing_sets_a_rectangle_of_the_normalised_image(pipeline_seed):
    assert extra_train_ops(make_train_config({"random_erasing": 0.0})) == ([], [])
    before, after = extra_train_ops(make_train_config({"random_erasing": 1.0}))
    assert before == [] and len(after) == 1
    images = np.random.default_rng(1).uniform(1, 2, (4, 3, 32, 32)).astype(np.float32)  # no zero anywhere
    out = run_pipeline(after, images)
    assert out.shape == images.shape and out.dtype == np.float32
    for image in out:
        erased = (image == 0).all(axis=0)
        rows, cols = np.nonzero(erased)
        assert rows.size >= 0.02 * 32 * 32 * 0.5  # at least about 2 % of the image
        # One axis-aligned rectangle, every channel of it zero, and only it.
        box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and erased.sum() == box.size and (image == 0).sum() == 3 * box.size


def test_random_erasing_draws_depend_only_on_the_image_and_the_pipeline_seed(pipeline_seed):
    """What makes erasing repeat with several map workers, and a resumed epoch erase as the uninterrupted one."""
    cfg = make_train_config({"random_erasing": 1.0})
    images = list(np.random.default_rng(2).uniform(1, 2, (5, 3, 32, 32)).astype(np.float32))
    op = extra_train_ops(cfg)[1][0]
    forward = [op(image) for image in images]
    op = extra_train_ops(cfg)[1][0]
    backward = [op(image) for image in images[::-1]][::-1]
    assert all((f == b).all() for f, b in zip(forward, backward))
    ds.config.set_seed(4321)  # another epoch's pipeline seed: other rectangles for the same images
    op = extra_train_ops(cfg)[1][0]
    assert any((op(image) != f).any() for image, f in zip(images, forward))


def test_random_erasing_is_as_often_tall_as_wide_as_in_timm():
    """timm draws the aspect ratio log-uniformly (MindSpore's RandomErasing uniformly: three in four wide)."""
    op = extra_train_ops(make_train_config({"random_erasing": 1.0}))[1][0]
    tall = wide = 0
    for image in np.random.default_rng(3).uniform(1, 2, (600, 3, 32, 32)).astype(np.float32):
        rows, cols = np.nonzero((op(image) == 0).all(axis=0))
        if not rows.size:  # no rectangle fitted in 10 draws
            continue
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        tall, wide = tall + (height > width), wide + (width > height)
    assert 0.4 < tall / (tall + wide) < 0.6


def test_random_erasing_erases_with_its_probability():
    op = extra_train_ops(make_train_config({"random_erasing": 0.25}))[1][0]
    images = np.random.default_rng(4).uniform(1, 2, (400, 3, 16, 16)).astype(np.float32)
    erased = np.mean([(op(image) == 0).any() for image in images])
    assert 0.17 < erased < 0.33


def test_defaults_add_nothing():
    assert extra_train_ops(make_train_config({})) == ([], [])


@pytest.mark.parametrize("key, value", [("auto_augment", "rand"), ("aa_magnitude", 31), ("random_erasing", 1.5),
                                        ("color_jitter", -0.1)])
def test_bad_values_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        make_train_config({key: value})
