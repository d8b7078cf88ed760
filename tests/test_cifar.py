"""CIFAR-10 binary reader and the from-scratch recipe, on tiny files written here in that format."""

import csv
import os

import numpy as np
import pytest

from ms_vit.data import cifar
from ms_vit.config import make_train_config, read_yaml
from ms_vit.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cifar(folder, n_train=24, n_test=8, seed=0):
    """Random images whose colour depends on the label (learnable), written as CIFAR-10 binary files."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 3
        base = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)[labels]
        images = np.clip(base[:, None, None, :] + rng.integers(-20, 20, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        cifar.write_split(str(folder), split, images, labels, files=2)
        out[split] = (images, labels)
    return out


def test_reads_the_byte_layout_of_the_binary_format(tmp_path):
    # One record built by hand: label 7, then the red plane, the green plane, the blue plane, each row-major.
    red = np.arange(1024, dtype=np.uint16).reshape(32, 32) % 251
    record = np.concatenate([[7], red.ravel(), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    np.concatenate([record, record]).tofile(tmp_path / "test_batch.bin")
    images, labels = cifar.read_split(str(tmp_path), "test")
    assert labels.tolist() == [7, 7] and labels.dtype == np.int32
    assert images.shape == (2, 32, 32, 3)
    assert np.array_equal(images[0, :, :, 0], red) and images[0, 5, 9, 1] == 20 and images[1, 31, 0, 2] == 30


def test_writer_and_reader_round_trip_over_several_batch_files(tmp_path):
    data = tiny_cifar(tmp_path, n_train=10)
    assert sorted(os.listdir(tmp_path)) == ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"]
    for split, (images, labels) in data.items():
        got_images, got_labels = cifar.read_split(str(tmp_path), split)
        assert np.array_equal(got_images, images) and np.array_equal(got_labels, labels)
    assert cifar.count(str(tmp_path), "train") == 10
    assert cifar.class_names(str(tmp_path))[0] == "airplane"
    (tmp_path / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    assert cifar.class_names(str(tmp_path))[9] == "c9"


def test_the_unpacked_archive_folder_is_found(tmp_path):
    tiny_cifar(tmp_path / "cifar-10-batches-bin", n_train=4, n_test=2)
    assert cifar.find_root(str(tmp_path)) == str(tmp_path / "cifar-10-batches-bin")


@pytest.mark.parametrize("case, fragment", [
    ("missing", "does not exist"),
    ("empty", "no CIFAR-10 binary files"),
    ("pickled", "pickled python version"),
    ("truncated", "not a whole number"),
    ("no_test", "test split missing"),
    ("cifar100", "two label bytes"),
])
def test_bad_cifar_folders_get_one_clear_error(tmp_path, case, fragment):
    folder = tmp_path / "cifar"
    if case != "missing":
        folder.mkdir()
    if case == "pickled":
        (folder / "data_batch_1").write_bytes(b"\x80\x04")
    if case in ("truncated", "no_test", "cifar100"):
        tiny_cifar(folder, n_train=4, n_test=2)
    if case == "truncated":
        with open(folder / "data_batch_1.bin", "r+b") as handle:
            handle.truncate(3073 + 100)
    if case == "no_test":
        os.remove(folder / "test_batch.bin")
    if case == "cifar100":
        record = np.zeros((2, 3073), np.uint8)
        record[:, 0] = 42
        record.tofile(folder / "test_batch.bin")
    with pytest.raises(ConfigError, match=fragment) as err:
        root = cifar.find_root(str(folder))
        for split in ("train", "test"):
            cifar.read_split(root, split)
    assert str(folder) in str(err.value)


def test_run_finetune_with_dataset_cifar10_trains_the_recipe_on_cifar_files(tmp_path):
    """run_finetune.sh --dataset cifar10 (no --config) runs configs/vit_cifar10_scratch.yaml on the binary files; the
    options after it still apply. MindSpore's INFO/WARNING lines go to OUTPUT_DIR/mindspore_logs/, not the console."""
    import subprocess
    import sys

    recipe = make_train_config(read_yaml(os.path.join(ROOT, "configs", "vit_cifar10_scratch.yaml")))
    assert (recipe.dataset, recipe.patch_size, recipe.image_size, recipe.embed_dim, recipe.num_layers) == \
        ("cifar10", 4, 32, 192, 12)
    tiny_cifar(tmp_path / "data", n_train=16, n_test=8)
    out = tmp_path / "out"
    # The recipe's model, made small here only to keep the test quick: the options after it still apply.
    proc = subprocess.run(["bash", os.path.join(ROOT, "run_finetune.sh"), "--dataset", "cifar10", "--data_dir",
                           str(tmp_path / "data"), "--epochs", "1", "--batch_size", "8", "--num_layers", "2",
                           "--warmup_epochs", "0", "--num_workers", "1", "--output_dir", str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = read_yaml(str(out / "config.yaml"))
    assert (saved["dataset"], saved["patch_size"], saved["image_size"], saved["embed_dim"], saved["num_layers"]) == \
        ("cifar10", 4, 32, 192, 2)
    classes = (out / "classes.txt").read_text().split("\n")[:-1]
    assert classes[:2] == ["airplane", "automobile"] and len(classes) == 10
    with open(out / "metrics.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert last["step"] == "2" and np.isfinite(float(last["train_loss"]))  # 16 images in batches of 8
    assert 0 <= float(last["top_1"]) <= 1
    assert os.path.getsize(out / "best.ckpt") > 0
    assert "top-1" in proc.stdout
    assert (out / "mindspore_logs").is_dir()


def test_eval_script_scores_the_cifar10_test_file(tmp_path, capsys):
    """eval.py --dataset cifar10: a checkpoint whose head always answers class 1 scores the test file's share of 1s."""
    import json

    import mindspore as ms

    import ms_vit
    from ms_vit.cli import run
    from test_scripts import script

    tiny_cifar(tmp_path / "cifar")  # test labels 0, 1, 2, 0, 1, 2, 0, 1: three of eight are class 1
    net = ms_vit.create_model("vit_tiny_test", num_classes=10)
    bias = np.zeros(10, np.float32)
    bias[1] = 10.0
    net.dense.weight.set_data(ms.Tensor(np.zeros_like(net.dense.weight.asnumpy())))
    net.dense.bias.set_data(ms.Tensor(bias))
    ckpt = ms_vit.save_checkpoint(net, tmp_path / "m.ckpt", meta={"model": net.config.to_dict()})
    out = tmp_path / "report.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--dataset", "cifar10", "--data_dir", str(tmp_path / "cifar"),
                                "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == 8 and report["top_1"] == pytest.approx(3 / 8)
    assert "images 8" in capsys.readouterr().out
    small = ms_vit.save_checkpoint(ms_vit.create_model("vit_tiny_test", num_classes=3), tmp_path / "s.ckpt",
                                   meta={"model": ms_vit.create_model("vit_tiny_test", num_classes=3).config.to_dict()})
    assert run(script("eval"), ["--ckpt", small, "--dataset", "cifar10", "--data_dir", str(tmp_path / "cifar")]) != 0
    assert "CIFAR-10 has 10" in capsys.readouterr().err
