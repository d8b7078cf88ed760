"""The pipelines read exactly the files ms_vit lists (data.list_images), in that order, whatever else the class
folders hold; check_data calls "ignored" exactly what the loader leaves out. Each image is a solid colour of its
own, so every output sample says which file it came from."""

import os

import numpy as np
import pytest
from PIL import Image

from ms_vit.data import folder as data
from ms_vit.data.check import IGNORED, scan
from ms_vit.config import make_train_config

SIZE = 16


def colour_of(k):
    return (37 * k + 20) % 256, (91 * k + 60) % 256, (53 * k + 140) % 256


def clutter(folder):
    """What a class folder copied from a Mac, a Windows share or a hand-made download tends to hold besides images."""
    good = os.path.join(folder, os.listdir(folder)[0])
    (open(os.path.join(folder, ".DS_Store"), "wb")).write(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (open(os.path.join(folder, "._0.png"), "wb")).write(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (open(os.path.join(folder, "Thumbs.db"), "wb")).write(b"\xd0\xcf\x11\xe0 not an image")
    (open(os.path.join(folder, "readme.txt"), "w")).write("where these came from")
    os.makedirs(os.path.join(folder, "more"))
    Image.open(good).save(os.path.join(folder, "more", "nested.png"))
    os.makedirs(os.path.join(folder, "album.jpg"))  # a folder named like an image


@pytest.fixture
def messy(tmp_path):
    """train/ and val/ with 2 classes of solid-colour images (one an upper-case .JPG) among stray files and folders.
    Returns (root, {path: colour})."""
    colours, k = {}, 0
    for split, count in (("train", 5), ("val", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / "data" / split / name
            os.makedirs(folder)
            for i in range(count):
                ext = ".JPG" if (split, name, i) == ("train", "dog", 2) else ".png"
                path = str(folder / f"{i}{ext}")
                Image.new("RGB", (SIZE, SIZE), colour_of(k)).save(path, quality=100)
                colours[path], k = colour_of(k), k + 1
            clutter(str(folder))
    (tmp_path / "data" / "train" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "data" / "train" / "labels.csv").write_text("x")
    return str(tmp_path / "data"), colours


def sources(batches, colours):
    """The file each output image came from, in output order, recovered from its colour."""
    paths, known = list(colours), np.array(list(colours.values()), np.float64)
    found = []
    for batch in batches.create_tuple_iterator(output_numpy=True):
        for image in batch[0]:
            mean = image.reshape(3, -1).mean(axis=1)  # CHW, mean 0 / std 1: the pixel values
            distance = np.abs(known - mean).sum(axis=1)
            assert distance.min() < 6, f"an output image matches no listed file (mean colour {mean})"
            found.append(paths[int(distance.argmin())])
    return found


def config(**extra):
    return make_train_config({"image_size": SIZE, "batch_size": 2, "crop_scale": [1, 1], "crop_ratio": [1, 1],
                              "hflip": 0, "mean": [0, 0, 0], "std": [1, 1, 1], "num_workers": 2, **extra})


def test_listing_keeps_images_only(messy):
    root, _ = messy
    assert data.list_images(os.path.join(root, "train", "dog")) == ["0.png", "1.png", "2.JPG", "3.png", "4.png"]


def test_training_reads_each_listed_image_once_per_epoch(messy):
    root, colours = messy
    train = os.path.join(root, "train")
    index = {"cat": 0, "dog": 1}
    files = data.file_list(train, index)
    assert len(files) == 10 and all(p in colours for p in files)
    cfg = config(drop_remainder=False)
    for epoch in (0, 1):
        order = data.epoch_indices(len(files), cfg, epoch)
        got = sources(data.train_dataset(train, index, cfg, epoch), colours)
        assert got == [files[i] for i in order]  # the sampler's indices point at the files they name
        assert sorted(got) == sorted(files)


def test_two_shards_cover_the_epoch_exactly(messy):
    root, colours = messy
    train = os.path.join(root, "train")
    index = {"cat": 0, "dog": 1}
    files = data.file_list(train, index)
    cfg = config(batch_size=4, drop_remainder=False)
    shards = []
    for rank in (0, 1):
        got = sources(data.train_dataset(train, index, cfg, epoch=3, rank=rank, world=2), colours)
        assert got == [files[i] for i in data.epoch_indices(len(files), cfg, 3, rank, 2)]
        shards.append(got)
    assert len(shards[0]) == len(shards[1]) == 5 and sorted(shards[0] + shards[1]) == sorted(files)


def test_val_reads_only_the_images_with_their_labels(messy):
    root, colours = messy
    val = os.path.join(root, "val")
    batches = data.eval_dataset(val, {"cat": 0, "dog": 1}, SIZE, 1.0, [0] * 3, [1] * 3, 3, num_workers=2)
    got = sources(batches, colours)
    assert got == data.file_list(val, {"cat": 0, "dog": 1})
    labels = np.concatenate([b[1] for b in batches.create_tuple_iterator(output_numpy=True)])
    assert labels.tolist() == [0, 0, 1, 1]


def test_check_data_ignores_what_the_loader_ignores(messy):
    root, _ = messy
    report = scan(root, image_size=SIZE)
    ignored = {f.path for f in report.findings if f.kind in IGNORED}
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            folder = os.path.join(root, split, name)
            loaded = {os.path.join(folder, f) for f in data.list_images(folder)}
            entries = {os.path.join(folder, f) for f in os.listdir(folder)}
            assert loaded | (entries & ignored) == entries and not loaded & ignored
            assert report.counts[split][name] == len(loaded)
    assert os.path.join(root, "train", "labels.csv") in ignored
    assert not report.errors  # the stray files are notes: none is read, so none breaks training
