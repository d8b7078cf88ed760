"""Every bad input: a non-zero exit, one `error:` line naming the file or key and the fix, no traceback, and no file
of the user's changed or removed. Each entry runs an entry point in-process, as the command line would."""

import hashlib
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import make_image_folder, write_images
from mindspore import nn
from test_scripts import script

import ms_vit
from ms_vit.cli import run
from ms_vit.train.run import main as train_main

TRAIN = ["--model", "vit_tiny_test", "--image_size", "32", "--batch_size", "2", "--epochs", "1", "--num_workers", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The user's files: good and bad data folders and checkpoints (never to be changed by a failing command)."""
    root = tmp_path_factory.mktemp("user")
    make_image_folder(root / "good", n_train=2, n_val=1, size=32)
    for name, problem in (("corrupt", b"\xff\xd8\xff\xe0 garbage"), ("zero", b"")):
        make_image_folder(root / name, n_train=2, n_val=1, size=32)
        (root / name / "train" / "blue" / f"{name}.jpg").write_bytes(problem)
    make_image_folder(root / "truncated", n_train=2, n_val=1, size=32)
    jpeg = (root / "truncated" / "train" / "red" / "0.jpg").read_bytes()
    (root / "truncated" / "train" / "red" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    make_image_folder(root / "one_class", classes=("blue",), n_train=2, n_val=1, size=32)
    os.makedirs(root / "no_classes" / "train")
    os.makedirs(root / "no_classes" / "val")
    os.makedirs(root / "empty")
    make_image_folder(root / "val_extra", classes=("blue", "green"), val_classes=("blue", "white"), n_train=2,
                      n_val=1, size=32)
    (root / "notes.txt").write_text("a file, not a folder")
    (root / "recipe.yaml").write_text("lr: 0.01\nwarmup_epoch: 1\n")
    net = ms_vit.create_model("vit_tiny_test", num_classes=3, image_size=32)
    ckpt = ms_vit.save_checkpoint(net, root / "model.ckpt", meta={"model": net.config.to_dict(),
                                                                   "class_names": ["blue", "green", "red"]})
    data = open(ckpt, "rb").read()
    (root / "zero.ckpt").write_bytes(b"")
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 3])
    (root / "html.ckpt").write_text("<html>404</html>")
    ms.save_checkpoint(nn.Dense(4, 2), str(root / "other_model.ckpt"))
    np.savez(root / "pickled.npz", cls=np.array([{"x": 1}], dtype=object))
    (root / "weights.pth").write_bytes(b"PK\x03\x04")
    for wnid in ("n01440764", "mystery"):
        write_images(root / "imagenet_val" / wnid, 1, size=32)
    wide = ms_vit.create_model("vit_tiny_test", num_classes=1000, image_size=32)
    ms.save_checkpoint(wide, str(root / "imagenet.ckpt"))
    return root


def case(entry, argv, fragment):
    return pytest.param(entry, argv, fragment, id=f"{entry}:{fragment[:40]}")


CASES = [
    case("train", ["--data_dir", "{u}/missing"], "data folder {u}/missing does not exist"),
    case("train", ["--data_dir", "{u}/empty"], "data folder {u}/empty is empty"),
    case("train", ["--data_dir", "{u}/notes.txt"], "{u}/notes.txt is a file, not a folder"),
    case("train", ["--data_dir", "{u}/no_classes"], "needs at least 2 class folders (found none)"),
    case("train", ["--data_dir", "{u}/one_class"], "needs at least 2 class folders (found only 'blue')"),
    case("train", ["--data_dir", "{u}/corrupt"], "corrupt.jpg (corrupt)"),
    case("train", ["--data_dir", "{u}/zero"], "zero.jpg (zero-byte)"),
    case("train", ["--data_dir", "{u}/truncated"], "cut.jpg (truncated)"),
    case("train", ["--data_dir", "{u}/val_extra"], "not among the model's 2 classes: white"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/missing.ckpt"], "{u}/missing.ckpt does not exist"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/zero.ckpt"], "{u}/zero.ckpt is empty (0 bytes)"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/truncated.ckpt"], "{u}/truncated.ckpt cannot be read"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/html.ckpt"], "{u}/html.ckpt cannot be read"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/other_model.ckpt"], "{u}/other_model.ckpt lacks"),
    case("train", ["--data_dir", "{u}/good", "--pretrained", "{u}/imagenet.ckpt", "--strict_head"],
         "dense.weight has shape (1000, 32), the model expects (3, 32)"),
    case("train", ["--data_dir", "{u}/good", "--lrr", "0.1"], "unknown option 'lrr'; did you mean lr?"),
    case("train", ["--config", "{u}/recipe.yaml"], "'warmup_epoch'; did you mean warmup_epochs?"),
    case("train", ["--data_dir", "{u}/good", "--lr", "-1"], "lr must be positive"),
    case("train", ["--data_dir", "{u}/good", "--batch_size", "-16"], "batch_size must be at least 1"),
    case("train", ["--data_dir", "{u}/good", "--batch_size", "64"], "batch_size 64 is larger than the 6 training"),
    case("train", ["--data_dir", "{u}/good", "--output_dir", "{u}/notes.txt/out"], "is not writable"),
    case("train", ["--data_dir", "{u}/good", "--device_target", "GPU"], "device GPU is not present on this machine"),
    case("train", ["--data_dir", "{u}/good", "--device_target", "TPU"], "device_target must be one of"),
    case("eval", ["--ckpt", "{u}/missing.ckpt", "--data_dir", "{u}/good/val"], "{u}/missing.ckpt does not exist"),
    case("eval", ["--ckpt", "{u}/model.ckpt", "--data_dir", "{u}/good"], "did you mean the val/ folder inside it?"),
    case("eval", ["--ckpt", "{u}/imagenet.ckpt", "--data_dir", "{u}/imagenet_val"],
         "mystery match none of the ImageNet-1k WordNet ids"),
    case("eval", ["--ckpt", "{u}/model.ckpt", "--data_dir", "{u}/zero/train"], "zero.jpg cannot be decoded"),
    case("eval", ["--data_dir", "{u}/good/val"], "the following arguments are required: --ckpt"),
    case("infer", ["--ckpt", "{u}/model.ckpt", "--input", "{u}/nothing_here"], "{u}/nothing_here does not exist"),
    case("infer", ["--ckpt", "{u}/model.ckpt", "--input", "{u}/good/*.gif"], "no images in {u}/good/*.gif"),
    case("infer", ["--ckpt", "{u}/imagenet.ckpt", "--input", "{u}/good/val", "--meta_mat", "{u}/meta.mat"],
         "meta.mat file {u}/meta.mat does not exist"),
    case("infer", ["--ckpt", "{u}/weights.pth", "--input", "{u}/good/val"], "PyTorch pickle file"),
    case("convert", ["{u}/pickled.npz", "{u}/out.ckpt"], "{u}/pickled.npz holds pickled Python objects"),
    case("convert", ["{u}/model.ckpt", "{u}/out.safetensors"], "must end with .ckpt"),
    case("convert", ["{u}/missing", "{u}/out.ckpt"], "{u}/missing does not exist"),
    case("check_data", ["{u}/missing"], "data folder {u}/missing does not exist"),
    case("check_data", ["{u}/notes.txt"], "{u}/notes.txt is a file, not a folder"),
    case("export", ["--ckpt", "{u}/model.ckpt", "--batch_size", "0"], "--batch_size must be at least 1"),
]


def snapshot(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def own_lines(text):
    """stderr without MindSpore's own log lines ([WARNING] ..., [ERROR] ME(...))."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith(("[WARNING]", "[INFO]", "[ERROR]"))]


@pytest.mark.parametrize("entry, argv, fragment", CASES)
def test_bad_input(inputs, tmp_path, capsys, entry, argv, fragment):
    before = snapshot(inputs)
    argv = [a.replace("{u}", str(inputs)) for a in argv]
    if entry == "train" and "--config" not in argv:
        argv = TRAIN + argv
    if entry == "train" and "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "out")]
    main = train_main if entry == "train" else script(entry)
    code = run(main, argv)
    err = capsys.readouterr().err
    lines = own_lines(err)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.replace("{u}", str(inputs)) in lines[0]
    assert "Traceback" not in err
    assert snapshot(inputs) == before  # nothing of the user's changed or removed


def test_every_case_expects_its_own_message():
    """Two cases of one entry point expecting the same fragment would let one message stand in for another's fix."""
    fragments = [(case.values[0], case.values[-1]) for case in CASES]
    duplicated = {f for f in fragments if fragments.count(f) > 1}
    assert not duplicated, duplicated


def test_gpu_without_cuda_11_runtime_is_one_line_naming_the_wheels_cuda(monkeypatch):
    """A machine with an NVIDIA driver but no CUDA 11 runtime: MindSpore 2.10's GPU plugins cannot run there."""
    from ms_vit import runtime
    from ms_vit.errors import ConfigError

    monkeypatch.setattr(runtime, "device_present", lambda target: True)
    monkeypatch.setattr(runtime, "missing_gpu_runtime", lambda: ["libcudart.so.11.0", "libcudnn.so.8"])
    with pytest.raises(ConfigError) as err:
        runtime.set_up("GPU")
    message = str(err.value)
    assert "\n" not in message and "CUDA 11.1/11.6" in message and "libcudart.so.11.0" in message
    assert "--device_target CPU" in message
