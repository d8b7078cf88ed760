"""One image decoder (data.decode_rgb) for training, eval and infer: EXIF orientation applied, transparency over
white, and unreadable files still skipped or named by the pipelines."""

import os

import numpy as np
import pytest
from PIL import Image

from ms_vit.data import folder as data
from ms_vit.config import make_train_config
from ms_vit.evaluate.infer import preprocess, read_rgb

SIZE = 32
MEAN, STD = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]


def pattern():
    """A square image whose four quadrants differ, so any rotation or flip shows."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    half = SIZE // 2
    image[:half, :half], image[:half, half:] = (230, 40, 40), (40, 230, 40)
    image[half:, :half], image[half:, half:] = (40, 40, 230), (230, 230, 40)
    return image


@pytest.fixture
def awkward(tmp_path):
    """val/a/ with a JPEG stored sideways (EXIF orientation 6) and an RGBA PNG with transparent areas."""
    folder = tmp_path / "a"
    os.makedirs(folder)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pattern()).save(folder / "1_rotated.jpg", exif=exif, quality=95)
    rgba = np.dstack([pattern(), np.full((SIZE, SIZE), 255, np.uint8)])
    rgba[:, : SIZE // 4, 3] = 0  # fully transparent left strip (its RGB is red/blue underneath)
    rgba[:, SIZE // 4: SIZE // 2, 3] = 128
    Image.fromarray(rgba, "RGBA").save(folder / "2_alpha.png")
    return tmp_path


def normalised(rgb):
    return ((rgb.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def eval_tensors(root, num_workers=1):
    batches = data.eval_dataset(str(root), {"a": 0}, SIZE, 1.0, MEAN, STD, 8, num_workers=num_workers)
    return np.concatenate([b[0] for b in batches.create_tuple_iterator(output_numpy=True)])


def train_tensors(root):
    """Training's pipeline made deterministic: the whole (square) image, no flip."""
    cfg = make_train_config({"image_size": SIZE, "batch_size": 2, "crop_scale": [1, 1], "crop_ratio": [1, 1],
                             "hflip": 0, "mean": MEAN, "std": STD, "num_workers": 2})
    files = data.file_list(str(root), {"a": 0})
    batch = next(data.train_dataset(str(root), {"a": 0}, cfg, epoch=0).create_tuple_iterator(output_numpy=True))[0]
    order = data.epoch_indices(len(files), cfg, 0)
    return batch[np.argsort(order)]  # back to file order


def test_train_eval_and_infer_decode_alike(awkward):
    prep = {"image_size": SIZE, "crop_pct": 1.0, "mean": MEAN, "std": STD}
    files = data.file_list(str(awkward), {"a": 0})
    infer = np.stack([preprocess(read_rgb(p), prep) for p in files])
    np.testing.assert_allclose(eval_tensors(awkward), infer, atol=1e-5)
    np.testing.assert_allclose(train_tensors(awkward), infer, atol=1e-5)


def test_exif_orientation_is_applied(awkward):
    path = str(awkward / "a" / "1_rotated.jpg")
    with Image.open(path) as image:
        stored = np.asarray(image.convert("RGB"))  # the pixels as stored, before the EXIF rotation
    upright = np.rot90(stored, k=-1)  # orientation 6: 90 degrees clockwise
    np.testing.assert_array_equal(read_rgb(path), upright)
    shown = eval_tensors(awkward)[0]
    np.testing.assert_allclose(shown, normalised(upright), atol=1e-4)
    assert np.abs(shown - normalised(stored)).max() > 1  # not the sideways pixels


def test_transparency_is_white(awkward):
    path = str(awkward / "a" / "2_alpha.png")
    rgb = read_rgb(path)
    assert (rgb[:, : SIZE // 4] == 255).all()  # transparent: white, not the colour stored under it
    assert 135 <= rgb[0, SIZE // 4 + 1, 0] <= 245 and 135 <= rgb[0, SIZE // 4 + 1, 1] <= 150  # half over white
    shown = eval_tensors(awkward)[1]
    np.testing.assert_allclose(shown, normalised(rgb), atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unreadable_file_is_skipped_or_named(awkward, workers):
    (awkward / "a" / "0_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    try:
        data.set_bad_images("skip")
        assert len(eval_tensors(awkward, workers)) == 2
        data.set_bad_images("fail")
        with pytest.raises(RuntimeError) as caught:
            eval_tensors(awkward, workers)
        assert data.decode_failure(caught.value) == str(awkward / "a" / "0_broken.jpg")
    finally:
        data.set_bad_images("fail")


def test_bicubic_is_pils_antialiased_bicubic_in_eval_and_training(tmp_path):
    """timm's and HF's "bicubic" is PIL's (antialiased): eval's resize and training's crop resize both match it."""
    from PIL import Image

    from ms_vit.data import folder as data

    rgb = np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)
    path = str(tmp_path / "noise.png")
    Image.fromarray(rgb).save(path)
    want = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.BICUBIC), np.float32)
    image = rgb
    for op in data.eval_transforms(32, 1.0, [0, 0, 0], [1, 1, 1], decode=False, interpolation="bicubic"):
        image = op(image)
    np.testing.assert_allclose(np.transpose(image, (1, 2, 0)), want, atol=1.0)
    crop = data.TrainAugment(32, (1, 1), (1, 1), 0.0, interpolation="bicubic")(path, 0)
    np.testing.assert_allclose(crop.astype(np.float32), want, atol=1.0)
