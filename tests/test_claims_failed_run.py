"""README / docs: a run that fails part-way still closes its TensorBoard writer (the events so far are on disk) and
turns MindSpore's compile cache off, so what the process compiles next is not cached into the failed run's folder."""

import os

import pytest
from conftest import TINY, make_image_folder
from test_tensorboard import read_scalars

from ms_vit.config import make_train_config
from ms_vit.train import compile_cache
from ms_vit.train.run import fine_tune


class Boom(Exception):
    """The failure injected in the middle of the run."""


def test_a_run_failing_mid_epoch_closes_tensorboard_and_turns_the_compile_cache_off(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    from ms_vit.train import tensorboard

    writers = []
    real_open = tensorboard.open_writer

    def open_writer(out_dir):  # the run's own writer, kept to look at afterwards
        writers.append(real_open(out_dir))
        return writers[-1]

    monkeypatch.setattr(tensorboard, "open_writer", open_writer)
    for name in (compile_cache.ENV_ENABLE, compile_cache.ENV_PATH):  # absent again after the test, whatever happens
        monkeypatch.delenv(name, raising=False)
    make_image_folder(tmp_path / "data", n_train=4, n_val=2, size=32)  # 12 images: 3 steps of 4 per epoch
    during = {}

    def log(line):
        if line.startswith("epoch 1/2 step 2/"):  # step 1 is done and was logged to TensorBoard
            during.update({k: os.environ.get(k) for k in (compile_cache.ENV_ENABLE, compile_cache.ENV_PATH)})
            raise Boom(line)

    cfg = make_train_config({"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 2, "num_workers": 1,
                             "log_every": 1, "tensorboard": True, "compile_cache": True, "mode": "graph",
                             "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run")})
    with pytest.raises(Boom):
        fine_tune(cfg, log=log)
    # The cache was on while the run trained, into the run's folder ...
    assert during[compile_cache.ENV_ENABLE] == "1"
    assert during[compile_cache.ENV_PATH].startswith(str(tmp_path / "run" / "compile_cache"))
    # ... and is off now that the run has failed.
    assert compile_cache.ENV_ENABLE not in os.environ and compile_cache.ENV_PATH not in os.environ
    # The writer is closed (tensorboardX drops its file writers on close) and flushed: step 1's scalars, never
    # flushed by the run itself (it flushes at the end of an epoch), are in the event file.
    assert len(writers) == 1 and writers[0].all_writers is None
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1] and [s for s, _ in scalars["train/lr"]] == [1]
