"""Shared fixtures: MindSpore on CPU in GRAPH mode, a tiny ViT and its input, checkpoint files the tests write; the
one tiny fine-tuning recipe (TINY_RUN, tiny_config, train_tiny) and one finished run of it for the whole session
(tiny_run); the one filter of network weights out of a training checkpoint (model_weights)."""

import os
import sys

import numpy as np
import pytest

# pytest-xdist's workers run under `python -c`, without the entry script that MindSpore's compile cache reads (ms_vit
# then turns the cache off): give them pytest's own, as a serial run has, so both test the same paths.
if not os.path.isfile(sys.argv[0]):
    sys.argv[0] = os.path.join(os.path.dirname(pytest.__file__), "__main__.py")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

import mindspore as ms

import ms_vit

ms_vit.set_up("CPU", mode="graph")
# amp_level auto takes bf16 on CPUs that have it: the suite's fp32 figures (resume to 1e-6, golden logits) are
# checked in fp32 on every CPU, and tests/test_bf16.py asks for bf16 itself.
os.environ["MS_VIT_BF16"] = "0"

# Small enough to compile in about a second: image 32, patch 8, dim 32, 2 layers, 4 heads, 10 classes.
TINY = "vit_tiny_test"


@pytest.fixture(autouse=True)
def graph_mode():
    """Every test starts and ends in GRAPH mode, whatever it switched to."""
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(scope="session")
def vit_b():
    """The ViT-B/16 (seed 0) that tests share: building one initialises 86 M weights, which takes seconds. Tests
    must not change its weights."""
    import mindspore as ms

    ms.set_seed(0)
    return ms_vit.create_model("vit_b_16")


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A tiny ViT checkpoint (seed 1) in the tutorial's format (plain parameter names) to fine-tune from."""
    ms.set_seed(1)
    path = str(tmp_path_factory.mktemp("pretrained") / "tiny.ckpt")
    ms.save_checkpoint(ms_vit.create_model(TINY), path)
    return path


@pytest.fixture
def images():
    def make(batch=2, size=32, seed=0):
        return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    return make


def logits_of(net, x):
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()


class _Tokens(ms.nn.Cell):
    """A ViT's ``forward_features`` tokens as one compiled graph, as FeatureExtractor and AttentionOutput compile it
    (called from Python, it would compile one graph per sub-cell)."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        return self.net.forward_features(x)[0]


def tokens_of(net, x):
    """The normalised tokens (B, 1 + registers + patches, D) of ``net`` in eval mode for the images ``x``."""
    net.set_train(False)
    return _Tokens(net)(ms.Tensor(x)).asnumpy()


@pytest.fixture
def tiny_net():
    ms.set_seed(0)
    return ms_vit.create_model(TINY)


COLOURS = {"blue": (200, 30, 30), "green": (30, 200, 30), "red": (30, 30, 200), "white": (220, 220, 220),
           "black": (10, 10, 10)}


def write_images(folder, count, colour="blue", size=40, seed=0, prefix=""):
    """``count`` small noisy JPEGs of one dominant colour in ``folder``."""
    import cv2

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image = np.clip(np.array(COLOURS.get(colour, (128, 128, 128)), np.float32) + rng.normal(0, 25, (size, size, 3)),
                        0, 255)
        cv2.imwrite(os.path.join(str(folder), f"{prefix}{i}.jpg"), image.astype(np.uint8))


def make_image_folder(root, classes=("blue", "green", "red"), n_train=8, n_val=4, size=40, val_classes=None, seed=0):
    """train/ and val/ class folders of small JPEGs whose dominant colour is the class (easy to learn)."""
    for split, count, names in (("train", n_train, classes), ("val", n_val, val_classes or classes)):
        for k, name in enumerate(names):
            write_images(os.path.join(str(root), split, name), count, name, size,
                         seed=seed * 100 + k + (50 if split == "val" else 0))
    return str(root)


def run_interrupted_and_resumed(values: dict, tmp_path):
    """Fine-tune ``values`` (2 epochs, log_every 1) twice: uninterrupted into tmp_path/full, and with a real SIGINT
    (Ctrl-C) at step 2 of epoch 2 into tmp_path/cut, then --resume there. Returns the interrupted checkpoint's
    metadata; the two folders' epoch_002.ckpt are for the caller to compare."""
    import signal

    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    fine_tune(make_train_config({**values, "output_dir": str(tmp_path / "full")}), log=lambda *a: None)

    def ctrl_c_in_epoch_two(line):
        if line.startswith("epoch 2/2 step 2/"):
            os.kill(os.getpid(), signal.SIGINT)

    cut = {**values, "output_dir": str(tmp_path / "cut")}
    assert fine_tune(make_train_config(cut), log=ctrl_c_in_epoch_two).interrupted
    saved = ms_vit.read_checkpoint(str(tmp_path / "cut" / "checkpoints" / "interrupted.ckpt")).meta
    result = fine_tune(make_train_config({**cut, "resume": True}), log=lambda *a: None)
    assert result.last["epoch"] == 2
    return saved


# One tiny-run recipe for every test that fine-tunes vit_tiny_test: AdamW with warmup, random crops, label
# smoothing and gradient clipping (so a test that needs one of them needs no recipe of its own). Tests override keys.
TINY_RUN = {"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 3, "optimizer": "adamw", "lr": 3e-3,
            "warmup_epochs": 0.5, "crop_scale": [0.7, 1.0], "label_smoothing": 0.1, "clip_grad_norm": 1.0,
            "num_workers": 1, "log_every": 100}


def tiny_config(data_dir, output_dir, **overrides):
    """The TrainConfig of TINY_RUN on ``data_dir`` into ``output_dir``, with ``overrides``."""
    from ms_vit.config import make_train_config

    return make_train_config({**TINY_RUN, "data_dir": str(data_dir), "output_dir": str(output_dir), **overrides})


def train_tiny(data_dir, output_dir, log=None, **overrides):
    """fine_tune of TINY_RUN (with ``overrides``); log lines go to ``log`` (default: nowhere)."""
    from ms_vit.train.run import fine_tune

    return fine_tune(tiny_config(data_dir, output_dir, **overrides), log=log or (lambda *a: None))


def command_line(values: dict) -> list:
    """``values`` as the command line takes them: ``--key value`` (``--key v1 v2`` for a list)."""
    argv = []
    for key, value in values.items():
        assert not isinstance(value, bool), f"{key}: a flag, give it on the command line itself"
        argv += [f"--{key}", *map(str, value if isinstance(value, (list, tuple)) else [value])]
    return argv


def model_weights(path) -> dict:
    """A training checkpoint's network weights: the entries a ViT of its architecture (its metadata's) has, without
    optimizer state, step counters, loss scale or EMA shadows. Every weight must be there."""
    ckpt = ms_vit.read_checkpoint(str(path))
    names = {p.name for p in ms_vit.ViT(ms_vit.ViTConfig(**ckpt.meta["model"])).get_parameters()}
    assert names <= set(ckpt.params), sorted(names - set(ckpt.params))
    return {name: value for name, value in ckpt.params.items() if name in names}


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two {name: array} dicts of the same names."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def read_metrics(output_dir) -> list:
    """metrics.csv of a run's output folder, one dict per epoch."""
    import csv

    with open(os.path.join(str(output_dir), "metrics.csv")) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One TINY_RUN fine-tuning (3 epochs, 36 training and 9 validation images of 3 colours) for every test that only
    needs a finished run: its result, log lines and output folder. Tests copy the folder before changing anything."""
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("tiny_run")
    data_dir = make_image_folder(root / "data", n_train=12, n_val=3)
    lines = []
    result = train_tiny(data_dir, root / "out", log=lines.append)
    return SimpleNamespace(data_dir=data_dir, output_dir=root / "out", result=result, lines=lines,
                           config=dict(TINY_RUN))

