"""augment.extra_train_ops: the auto-augment, colour jitter and random erasing ops, run in a MindSpore pipeline."""

import numpy as np
import pytest

import mindspore.dataset as ds

from ms_vit.data.augment import extra_train_ops
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
def test_auto_augment_changes_most_uint8_images_in_a_pipeline_and_repeats_with_its_seed(policy, pipeline_seed):
    before, after = extra_train_ops(make_train_config({"auto_augment": policy}))
    assert len(before) == 1 and after == []
    images = uint8_images(12)
    out = run_pipeline(before, images)
    assert out.shape == images.shape and out.dtype == np.uint8
    # Not "some pixel of some image changed": most images of random noise are changed by whatever ops are drawn
    # (only an identity draw, or ops that do nothing to noise, leave one alone).
    assert sum((o != i).any() for o, i in zip(out, images)) >= len(images) // 2
    np.testing.assert_array_equal(run_pipeline(extra_train_ops(make_train_config({"auto_augment": policy}))[0],
                                               images), out)  # the same pipeline seed: the same draws


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_auto_augment_geometric_ops_fill_uncovered_pixels_with_the_mean_pixel(policy, pipeline_seed):
    """On flat grey images every colour op keeps R = G = B; a shear or translate uncovers pixels, which must then
    hold the fill, the mean pixel of the run's preprocessing (ImageNet's by default: 124, 116, 104).

    Not autoaugment: the geometric op of its ImageNet policy is Rotate, and MindSpore 2.10's Rotate inside
    AutoAugment / TrivialAugmentWide fills with the fill's channels rotated (G, B, R), not with the fill."""
    before, _ = extra_train_ops(make_train_config({"auto_augment": policy}))
    fill = np.array((124, 116, 104), np.uint8)
    assert tuple(before[0].fill_value) == tuple(int(v) for v in fill)
    images = np.full((60, 32, 32, 3), 200, np.uint8)
    out = run_pipeline(before, images)
    filled = sum((image == fill).all(axis=-1).any() for image in out)
    assert filled >= 3, f"only {filled} of 60 draws uncovered pixels filled with the mean pixel"


def test_auto_augment_fills_with_the_mean_pixel_and_resamples_with_the_run_interpolation():
    op = extra_train_ops(make_train_config({"auto_augment": "randaugment", "mean": [10.2, 20.6, 300],
                                            "std": [1, 1, 1], "interpolation": "bicubic",
                                            "aa_magnitude": 5, "aa_num_ops": 3}))[0][0]
    from mindspore.dataset import vision

    assert op.fill_value == (10, 21, 255)
    assert op.interpolation == vision.Inter.BICUBIC
    assert (op.num_ops, op.magnitude, op.num_magnitude_bins) == (3, 5, 31)


def test_color_jitter_scales_brightness_within_its_range_and_zero_adds_no_op(pipeline_seed):
    """color_jitter 0.4: brightness, contrast and saturation factors from [0.6, 1.4]. On a flat grey image contrast
    and saturation change nothing, so each output is the grey times its brightness factor, still flat."""
    assert extra_train_ops(make_train_config({"color_jitter": 0.0})) == ([], [])
    before, after = extra_train_ops(make_train_config({"color_jitter": 0.4}))
    assert len(before) == 1 and after == []
    images = np.full((100, 16, 16, 3), 100, np.uint8)
    out = run_pipeline(before, images)
    assert out.shape == images.shape and out.dtype == np.uint8
    levels = out.reshape(len(out), -1)
    assert (levels.min(axis=1) == levels.max(axis=1)).all()  # flat grey in, flat grey out: no geometry, no tint
    factors = levels[:, 0] / 100.0
    assert factors.min() >= 0.6 - 0.011 and factors.max() <= 1.4 + 0.011  # rounding to uint8: 1 level in 100
    assert factors.min() < 0.7 and factors.max() > 1.3  # the whole range is drawn, not a narrower one
    assert len(np.unique(levels[:, 0])) > 20


def test_color_jitter_changes_contrast_and_saturation_within_their_range(pipeline_seed):
    """On a flat colour, brightness scales every channel alike (the chroma over the luma stays), while contrast and
    saturation both pull each channel towards the pixel's grey: the chroma over the luma is then scaled by the
    product of two factors of [0.6, 1.4], and the hue is kept."""
    before, _ = extra_train_ops(make_train_config({"color_jitter": 0.4}))
    colour = np.array((120, 60, 200), np.float64)
    images = np.full((100, 8, 8, 3), colour, np.uint8)
    out = run_pipeline(before, images)
    assert (out == out[:, :1, :1]).all()  # each image stays one flat colour
    colours = out[:, 0, 0].astype(np.float64)

    def chroma_over_luma(c):
        return (c.max(axis=-1) - c.min(axis=-1)) / (c @ np.array((0.299, 0.587, 0.114)))

    change = chroma_over_luma(colours) / chroma_over_luma(colour)
    assert change.min() > 0.6 ** 2 * 0.95 and change.max() < 1.4 ** 2 * 1.05
    assert change.min() < 0.75 and change.max() > 1.3  # not brightness alone (which leaves it at 1)
    assert (colours.argmax(axis=1) == 2).all() and (colours.argmin(axis=1) == 1).all()  # the hue is kept


def test_color_jitter_is_off_with_auto_augment_as_in_timm():
    before, _ = extra_train_ops(make_train_config({"auto_augment": "trivialaugment", "color_jitter": 0.4}))
    assert [type(op).__name__ for op in before] == ["TrivialAugmentWide"]


def erased_box(image):
    """(top, left, height, width) of the zeroed rectangle of a CHW image (None when nothing was erased); asserts that
    the zeros are one axis-aligned rectangle, every channel of it."""
    erased = (image == 0).all(axis=0)
    rows, cols = np.nonzero(erased)
    if not rows.size:
        assert not (image == 0).any()
        return None
    box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all() and erased.sum() == box.size and (image == 0).sum() == 3 * box.size
    return rows.min(), cols.min(), box.shape[0], box.shape[1]


def could_be_drawn(h, w, side, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3)):
    """Whether an h x w rectangle of a side x side image can come from timm's draw (area a fraction in ``scale`` of
    the image, aspect ratio h / w in ``ratio``, each side rounded to the nearest pixel)."""
    low_area, high_area = (h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5)
    low_ratio, high_ratio = (h - 0.5) / (w + 0.5), (h + 0.5) / (w - 0.5)
    return (low_area <= scale[1] * side * side and high_area >= scale[0] * side * side
            and low_ratio <= ratio[1] and high_ratio >= ratio[0])


def test_random_erasing_sets_a_rectangle_of_the_normalised_image_and_nothing_else(pipeline_seed):
    assert extra_train_ops(make_train_config({"random_erasing": 0.0})) == ([], [])
    before, after = extra_train_ops(make_train_config({"random_erasing": 1.0}))
    assert before == [] and len(after) == 1
    images = np.random.default_rng(1).uniform(1, 2, (8, 3, 32, 32)).astype(np.float32)  # no zero anywhere
    out = run_pipeline(after, images)
    assert out.shape == images.shape and out.dtype == np.float32
    for image, original in zip(out, images):
        top, left, h, w = erased_box(image)
        assert could_be_drawn(h, w, 32), (h, w)
        kept = np.ones((32, 32), bool)
        kept[top:top + h, left:left + w] = False
        np.testing.assert_array_equal(image[:, kept], original[:, kept])  # the rest of the image untouched


def test_random_erasing_area_is_2_to_33_percent_of_the_image():
    """Both ends of timm's area range: no rectangle outside [2 %, 1/3] of the image (up to rounding of its sides),
    and over 600 draws the smallest and largest come close to the ends."""
    op = extra_train_ops(make_train_config({"random_erasing": 1.0}))[1][0]
    shares = []
    for image in np.random.default_rng(5).uniform(1, 2, (600, 3, 32, 32)).astype(np.float32):
        box = erased_box(op(image))
        if box is None:  # no rectangle fitted in 10 draws
            continue
        _, _, h, w = box
        assert could_be_drawn(h, w, 32), (h, w)
        shares.append(h * w / 1024)
    assert len(shares) > 550
    assert min(shares) < 0.04 and max(shares) > 0.27
    assert max(shares) <= (1 / 3) * 1.2 and min(shares) >= 0.02 * 0.6


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


def test_train_crop_flips_exactly_as_np_flip_with_its_probability(tmp_path):
    """TrainAugment with a crop of the whole image: no flip gives the image, a flip gives np.flip of it on the width
    axis, and hflip 0.5 flips about half of the samples (each sample's draw its own)."""
    import cv2

    from ms_vit.data.folder import TrainAugment

    image = np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, image[:, :, ::-1])  # lossless; OpenCV writes BGR
    whole = dict(image_size=32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), key=(0, 0))
    np.testing.assert_array_equal(TrainAugment(hflip=0.0, **whole)(np.array(path), 0), image)
    np.testing.assert_array_equal(TrainAugment(hflip=1.0, **whole)(np.array(path), 0), np.flip(image, axis=1))
    half = TrainAugment(hflip=0.5, **whole)
    outs = [half(np.array(path), i) for i in range(200)]
    flipped = [bool((o == np.flip(image, axis=1)).all()) for o in outs]
    assert all(f or (o == image).all() for f, o in zip(flipped, outs))
    assert 0.4 < np.mean(flipped) < 0.6


def test_defaults_add_nothing():
    assert extra_train_ops(make_train_config({})) == ([], [])


@pytest.mark.parametrize("key, value", [("auto_augment", "rand"), ("aa_magnitude", 31), ("random_erasing", 1.5),
                                        ("color_jitter", -0.1)])
def test_bad_values_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        make_train_config({key: value})
