"""README claims about what the training and validation pipelines of a run hold:
- "The architecture and preprocessing come from the weights unless you set them": the mean/std, interpolation and
  crop_pct of the pretrained weights reach the ops of the pipelines fine_tune builds, for training and validation;
- auto-augment and colour jitter (docs/training.md) run inside the training pipeline: between the crop and Normalize,
  changing the images the model gets in the way each op should."""

import os

import cv2
import numpy as np
import pytest
from conftest import TINY, make_image_folder
from safetensors.numpy import save_file
from test_formats import ours, to_timm

import mindspore as ms
import ms_vit
from ms_vit.config import IMAGENET_MEAN, IMAGENET_STD, make_train_config
from ms_vit.data import folder as data
from ms_vit.train.run import fine_tune


def map_ops(pipeline) -> list:
    """The operations of every map of a MindSpore pipeline, from its source to its end."""
    ops, stack = [], [pipeline]
    while stack:
        node = stack.pop()
        ops = list(getattr(node, "operations", None) or []) + ops
        stack.extend(node.children)
    return ops


def one(ops, type_name):
    found = [op for op in ops if type(op).__name__ == type_name]
    assert len(found) == 1, [type(op).__name__ for op in ops]
    return found[0]


class Built(Exception):
    """Stops fine_tune once it has built its first training pipeline: nothing needs to compile or train."""


def spy_pipelines(monkeypatch) -> dict:
    """Record the pipelines fine_tune's data source builds: {"train": [...], "val": [...]} (as returned); the run
    stops with Built when the first training pipeline is built (the validation one is built before it)."""
    built = {"train": [], "val": []}
    real_train, real_eval = data.train_dataset, data.eval_dataset

    def train_dataset(*args, **kwargs):
        built["train"].append(real_train(*args, **kwargs))
        raise Built

    def eval_dataset(*args, **kwargs):
        built["val"].append(real_eval(*args, **kwargs))
        return built["val"][-1]

    monkeypatch.setattr(data, "train_dataset", train_dataset)
    monkeypatch.setattr(data, "eval_dataset", eval_dataset)
    return built


def test_training_and_validation_pipelines_take_the_pretrained_weights_preprocessing(tmp_path, monkeypatch):
    """timm weights: mean and std 127.5, bicubic, crop_pct 0.9, none of them the defaults (ImageNet's statistics,
    bilinear, 0.875); a run that sets none of the keys trains and validates with exactly those."""
    ms.set_seed(1)
    weights = tmp_path / "vit_tiny.safetensors"
    save_file(to_timm(ours(ms_vit.create_model(TINY, layer_norm_eps=1e-6, gelu="erf"))), str(weights))
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=40)
    built = spy_pipelines(monkeypatch)
    with pytest.raises(Built):
        fine_tune(make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 1,
                                     "num_workers": 1, "pretrained": str(weights), "data_dir": str(tmp_path / "data"),
                                     "output_dir": str(tmp_path / "run")}), log=lambda *a: None)
    assert len(built["train"]) == 1 and len(built["val"]) == 1
    half = [127.5] * 3
    train_ops, val_ops = map_ops(built["train"][0]), map_ops(built["val"][0])
    crop = one(train_ops, "TrainAugment")  # decode, random resized crop, flip
    assert crop.interpolation == "bicubic" and crop.size == 32
    normalize = one(train_ops, "Normalize")
    np.testing.assert_allclose(normalize.mean, half)
    np.testing.assert_allclose(normalize.std, half)
    resize = one(val_ops, "Resize")
    assert resize.py_size == round(32 / 0.9) == 36  # 37 at the default crop_pct 0.875
    assert resize.interpolation == ms.dataset.vision.Inter.PILCUBIC  # PIL's bicubic; bilinear by default
    assert tuple(one(val_ops, "CenterCrop").size) == (32, 32)
    normalize = one(val_ops, "Normalize")
    np.testing.assert_allclose(normalize.mean, half)
    np.testing.assert_allclose(normalize.std, half)
    assert not np.allclose(IMAGENET_MEAN, half)


def grey_folder(root, levels=(80, 100, 120), count=4, size=40) -> str:
    """train/ of flat grey PNGs (lossless), one grey level per class."""
    for k, level in enumerate(levels):
        os.makedirs(root / "train" / f"c{k}", exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / "train" / f"c{k}" / f"{i}.png"), np.full((size, size, 3), level, np.uint8))
    return str(root / "train")


def pixels(train_dir, **keys) -> tuple[np.ndarray, list]:
    """Epoch 0 of the run's training pipeline for ``keys``, back in 0..255 HWC pixels; and the pipeline's ops."""
    cfg = make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "num_workers": 1, "seed": 3, **keys})
    pipeline = data.train_dataset(train_dir, {"c0": 0, "c1": 1, "c2": 2}, cfg, 0)
    images = np.concatenate([b[0] for b in pipeline.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    mean, std = np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1), np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (images * std + mean).transpose(0, 2, 3, 1), map_ops(pipeline)


def test_color_jitter_runs_in_the_training_pipeline_between_the_crop_and_normalize(tmp_path):
    """Flat grey images: the plain pipeline gives back each image's grey level; with color_jitter 0.4 each image is
    still flat grey (contrast and saturation change nothing there) but scaled by its brightness factor of
    [0.6, 1.4], and the same sample order (seeded per epoch) lets the two be compared image by image."""
    train_dir = grey_folder(tmp_path)
    plain, plain_ops = pixels(train_dir)
    jittered, ops = pixels(train_dir, color_jitter=0.4)
    names = [type(op).__name__ for op in ops]
    assert names.index("TrainAugment") < names.index("RandomColorAdjust") < names.index("Normalize")
    assert "RandomColorAdjust" not in [type(op).__name__ for op in plain_ops]
    assert len(plain) == len(jittered) == 12
    levels = plain.reshape(12, -1).mean(axis=1)
    assert np.abs(plain - levels[:, None, None, None]).max() < 1e-3 and set(np.round(levels)) == {80, 100, 120}
    flat = jittered.reshape(12, -1)
    assert np.ptp(flat, axis=1).max() < 1e-3  # still flat: no geometry, no tint
    factors = flat.mean(axis=1) / levels
    assert (factors > 0.6 - 0.01).all() and (factors < 1.4 + 0.01).all()
    assert (np.abs(factors - 1) > 0.02).sum() >= 9  # nearly every image changed


def test_auto_augment_runs_in_the_training_pipeline_between_the_crop_and_normalize(tmp_path):
    """RandAugment in the pipeline: most images differ from the plain pipeline's, and the geometric ops' uncovered
    pixels hold the mean pixel, which normalises to 0: the op sat before Normalize with the run's fill."""
    train_dir = grey_folder(tmp_path, count=8)
    plain, _ = pixels(train_dir)
    augmented, ops = pixels(train_dir, auto_augment="randaugment", aa_num_ops=2, aa_magnitude=20)
    names = [type(op).__name__ for op in ops]
    assert names.index("TrainAugment") < names.index("RandAugment") < names.index("Normalize")
    assert len(augmented) == len(plain) == 24
    changed = np.abs(augmented - plain).reshape(24, -1).max(axis=1) > 0.5
    assert changed.sum() >= 18
    fill = np.round(IMAGENET_MEAN)  # 124, 116, 104: a colour no grey image has
    filled = [np.abs(image - fill).max(axis=-1) < 1e-3 for image in augmented]
    assert sum(mask.any() for mask in filled) >= 3
