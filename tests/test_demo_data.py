import os

import cv2

from ms_vit.demo_data import SHAPES, make_shapes_dataset


def test_shapes_dataset_is_an_image_folder(tmp_path):
    root = make_shapes_dataset(str(tmp_path / "demo"), train_per_class=3, val_per_class=2, size=48)
    for split, count in (("train", 3), ("val", 2)):
        assert sorted(os.listdir(os.path.join(root, split))) == sorted(SHAPES)
        for shape in SHAPES:
            files = os.listdir(os.path.join(root, split, shape))
            assert len(files) == count
            image = cv2.imread(os.path.join(root, split, shape, files[0]))
            assert image.shape == (48, 48, 3) and image.max() >= 120  # a bright shape on a dark background
    first = sorted(os.listdir(os.path.join(root, "train", "star")))
    os.remove(os.path.join(root, "train", "star", first[0]))
    make_shapes_dataset(root, train_per_class=3, val_per_class=2, size=48)  # complete: left as it is
    assert len(os.listdir(os.path.join(root, "train", "star"))) == 2


def test_shapes_are_deterministic(tmp_path):
    a = make_shapes_dataset(str(tmp_path / "a"), 2, 1, size=32, seed=5)
    b = make_shapes_dataset(str(tmp_path / "b"), 2, 1, size=32, seed=5)
    for shape in SHAPES:
        name = sorted(os.listdir(os.path.join(a, "train", shape)))[0]
        assert open(os.path.join(a, "train", shape, name), "rb").read() == \
            open(os.path.join(b, "train", shape, name), "rb").read()
