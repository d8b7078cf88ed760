import os

import cv2
import pytest

from ms_vit.data.demo import SHAPES, make_shapes_dataset


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


def small(monkeypatch):
    """The demo at test size, as resolve_data_dir generates it."""
    import functools

    from ms_vit.data import demo as demo_data

    monkeypatch.setattr(demo_data, "make_shapes_dataset",
                        functools.partial(make_shapes_dataset, train_per_class=3, val_per_class=2, size=32))


def interrupt_after(monkeypatch, draws):
    """Ctrl-C after ``draws`` images, as if the user stopped the first demo run while it generated."""
    from ms_vit.data import demo as demo_data

    real, count = demo_data.draw_shape, [0]

    def draw(*args):
        count[0] += 1
        if count[0] > draws:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(demo_data, "draw_shape", draw)
    return lambda: monkeypatch.setattr(demo_data, "draw_shape", real)


def demo_config(root):
    from ms_vit.config import make_train_config

    return make_train_config({"demo_data": True, "data_dir": str(root)})


def image_count(root):
    return sum(f.endswith(".jpg") for _, _, files in os.walk(root) for f in files)


def test_an_interrupted_generation_is_regenerated_not_trained_on(tmp_path, monkeypatch):
    from ms_vit.data.sources import resolve_data_dir

    small(monkeypatch)
    root = tmp_path / "demo"
    restore = interrupt_after(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        resolve_data_dir(demo_config(root), log=lambda *a: None)
    assert not root.exists() or not os.listdir(root)  # nothing half-written where training would look
    assert [n for n in os.listdir(tmp_path) if n != "demo"] == []  # and no staging folder left beside it
    restore()
    lines = []
    assert resolve_data_dir(demo_config(root), log=lines.append) == str(root)
    assert image_count(root) == 6 * (3 + 2) and "generating the demo data set" in lines[0]
    assert resolve_data_dir(demo_config(root), log=lines.append) == str(root) and len(lines) == 1  # complete: kept


def test_a_partial_folder_from_before_is_replaced(tmp_path, monkeypatch):
    """A folder an older version left half-written (generated images, no completion marker)."""
    from ms_vit.data.sources import resolve_data_dir

    small(monkeypatch)
    root = tmp_path / "demo"
    make_shapes_dataset(str(root), train_per_class=3, val_per_class=2, size=32)
    os.remove(root / ".complete")
    for name in os.listdir(root / "val" / "star"):
        os.remove(root / "val" / "star" / name)
    os.remove(root / "train" / "ring" / "ring_0002.jpg")
    assert resolve_data_dir(demo_config(root), log=lambda *a: None) == str(root)
    assert len(os.listdir(root / "val" / "star")) == 2 and len(os.listdir(root / "train" / "ring")) == 3
    assert (root / ".complete").exists()


def test_a_stale_staging_folder_is_removed(tmp_path):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".demo.partial-{int(gone.stdout)}"
    os.makedirs(stale / "train" / "circle")
    make_shapes_dataset(str(tmp_path / "demo"), train_per_class=1, val_per_class=1, size=32)
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_someone_elses_data_is_never_removed(tmp_path):
    from conftest import make_image_folder

    from ms_vit import ConfigError
    from ms_vit.data.sources import resolve_data_dir

    root = make_image_folder(tmp_path / "mine", n_train=1, n_val=1, size=32)
    before = sorted(str(p) for p in (tmp_path / "mine").rglob("*"))
    assert resolve_data_dir(demo_config(root), log=lambda *a: None) == root  # used as given, as without demo_data
    with pytest.raises(ConfigError, match="is not a complete demo data set and holds other files"):
        make_shapes_dataset(root, 1, 1, size=32)
    assert sorted(str(p) for p in (tmp_path / "mine").rglob("*")) == before
