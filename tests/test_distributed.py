"""Data parallelism: gradients reduced once per optimizer step; a 2-process msrun resume where only rank 0 has the
checkpoints; validation split over the processes and summed; run_finetune.sh's launches (--device_num, --node_num)
ending with one process's weights; a node that cannot reach its master. Every multi-process run here is compared with
one one-process run (the module's ``full``)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from conftest import (ROOT, TINY, TINY_RUN, command_line, make_image_folder, max_difference, read_metrics,
                      train_tiny)

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.distributed import shard_indices
from ms_vit.evaluate.run import evaluate, load_for_inference
from ms_vit.train.run import build_train_cell


class CountingReducer(ms.nn.Cell):
    """Stands in for the data-parallel gradient reducer (identity here) and counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def construct(self, grads):
        self.calls += 1
        return grads


@pytest.mark.parametrize("accum_steps", [1, 3])
def test_gradients_are_reduced_once_per_optimizer_step(tiny_net, images, accum_steps):
    ms.set_context(mode=ms.PYNATIVE_MODE)  # so the reducer's Python body runs on every call
    cfg = make_train_config({"model": TINY, "batch_size": 6, "accum_steps": accum_steps, "optimizer": "sgd",
                             "lr": 0.1})
    cell, _ = build_train_cell(tiny_net, cfg, 10, steps_per_epoch=4, amp_level="O0")
    cell.grad_reducer = reducer = CountingReducer()
    cell.set_train(True)
    x, y = ms.Tensor(images(batch=6 // accum_steps)), ms.Tensor(np.arange(6 // accum_steps, dtype=np.int32))
    for _ in range(2 * accum_steps):  # two optimizer steps
        cell(x, y)
    assert reducer.calls == 2


def test_shards_cover_every_sample_once():
    for n, world in ((9, 2), (10, 4), (3, 3), (7, 1)):
        shards = [shard_indices(n, rank, world) for rank in range(world)]
        assert sorted(np.concatenate(shards).tolist()) == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_both_sources_give_each_process_its_val_shard(tmp_path):
    from ms_vit.data import cifar
    from ms_vit.data.sources import CifarSource, FolderSource

    make_image_folder(tmp_path / "folder", n_train=1, n_val=3, size=32)  # 9 val images: labels 0,0,0,1,1,1,2,2,2
    rng = np.random.default_rng(0)
    cifar.write_split(str(tmp_path / "cifar"), "train", rng.integers(0, 255, (4, 32, 32, 3)), np.arange(4))
    cifar.write_split(str(tmp_path / "cifar"), "test", rng.integers(0, 255, (7, 32, 32, 3)), np.arange(7))
    prep = {"model": TINY, "image_size": 32, "batch_size": 4, "num_workers": 1, "mean": [127.5] * 3,
            "std": [127.5] * 3, "crop_pct": 1.0, "interpolation": "bilinear"}
    for source_class, name, labels in ((FolderSource, "folder", [0, 0, 0, 1, 1, 1, 2, 2, 2]),
                                       (CifarSource, "cifar", list(range(7)))):
        cfg = make_train_config({**prep, "data_dir": str(tmp_path / name),
                                 "dataset": "cifar10" if name == "cifar" else "folder"})
        source = source_class(str(tmp_path / name), cfg, lambda *a: None)
        for world in (1, 2):
            for rank in range(world):
                got = [int(y) for _, batch in source.val_data(rank, world).create_tuple_iterator(output_numpy=True)
                       for y in batch]
                assert got == labels[rank::world], (name, rank, world)


# Run by each msrun worker: rank 1 gets an output_dir of its own, empty, as a process on another machine would have
# (the test stands in for separate disks); the validation calls are counted per process.
HARNESS = """
import json, os, sys
import numpy as np
from ms_vit.train import callbacks
from ms_vit import distributed
from ms_vit.config.document import parse_config
from ms_vit.train.run import fine_tune

rank, world = distributed.init_data_parallel()
distributed.init_data_parallel = lambda: (rank, world)  # fine_tune's call: the group is joined already
seen, validate = [], callbacks.validate

def counting(*args, **kwargs):
    result = validate(*args, **kwargs)
    seen.append([result["local_images"], result["images"]])
    return result

callbacks.validate = counting
report, out_dirs, argv = sys.argv[1], sys.argv[2:4], sys.argv[4:]
result = fine_tune(parse_config(argv + ["--output_dir", out_dirs[rank]]), log=print)
np.savez(os.path.join(report, f"rank{rank}.npz"), **{p.name: p.asnumpy() for p in result.net.get_parameters()})
with open(os.path.join(report, f"rank{rank}.json"), "w") as handle:
    json.dump({"validated": seen, "last": result.last}, handle)
"""

# The tiny recipe made deterministic for comparisons across process counts: SGD, whole images, no flips; batch 8 (3
# steps an epoch on 24 training images, 9 validation images), 3 epochs.
RUN = {"batch_size": 8, "epochs": 3, "optimizer": "sgd", "lr": 0.1, "crop_scale": [1, 1], "crop_ratio": [1, 1],
       "hflip": 0}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The one-process run every multi-process run here is compared with: its data folder and output folder."""
    root = tmp_path_factory.mktemp("one_process")
    data = make_image_folder(root / "data", n_train=8, n_val=3, size=32)
    train_tiny(data, root / "full", **RUN)
    return SimpleNamespace(data=data, out=root / "full")


def run_args(full, **extra):
    """RUN's command line on the shared data, as run_finetune.sh and the msrun harness take it."""
    return command_line({**TINY_RUN, **RUN, "data_dir": full.data, **extra})


def training_state(out, epoch=3):
    """Everything the epoch's checkpoint holds: weights, optimizer buffers, step counters."""
    return ms_vit.read_checkpoint(str(out / "checkpoints" / f"epoch_{epoch:03d}.ckpt")).params


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _msrun(tmp_path, script, args, timeout=240):
    logs = tmp_path / "msrun_logs"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    proc = subprocess.Popen(["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
                             f"--log_dir={logs}", "--join=True", str(script), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too: a rank waiting in a collective never ends alone
        proc.communicate()
    worker_logs = "".join(open(logs / name).read()[-3000:] for name in sorted(os.listdir(logs))
                          if name.startswith("worker"))
    return proc.returncode, worker_logs


def test_two_process_resume_from_rank_0_only_and_sharded_validation(full, tmp_path):
    """Rank 0 resumes from epoch 2 of the one-process run, rank 1's output_dir is empty: both end with the
    uninterrupted run's weights (2 processes x 2 micro-batches against whole batches); val is split 5 + 4 and
    summed to eval.py's numbers for the same weights."""
    cut = tmp_path / "cut"  # the one-process run as it stood after epoch 2
    shutil.copytree(full.out, cut)
    os.remove(cut / "checkpoints" / "epoch_003.ckpt")
    with open(cut / "train_state.json", "w") as handle:
        json.dump({"checkpoint": "checkpoints/epoch_002.ckpt", "epoch": 2}, handle)
    script, report = tmp_path / "harness.py", tmp_path / "report"
    script.write_text(HARNESS)
    report.mkdir()
    args = run_args(full, accum_steps=2) + ["--resume"]
    code, logs = _msrun(tmp_path, script, [str(report), str(cut), str(tmp_path / "rank1_elsewhere"), *args])
    assert code == 0, logs
    assert "resumed from" in logs and "epoch_002.ckpt (epoch 2" in logs

    resumed = training_state(cut)
    assert max_difference(training_state(full.out), resumed) <= 1e-6  # weights, momentum buffers, step counters
    ranks = [dict(np.load(report / f"rank{r}.npz")) for r in (0, 1)]
    assert max_difference(ranks[0], ranks[1]) == 0.0
    before = training_state(full.out, 2)
    assert float(np.abs(before["dense.weight"] - resumed["dense.weight"]).max()) > 1e-4  # epoch 3 did move them

    runs = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [run["validated"] for run in runs] == [[[5, 9]], [[4, 9]]]  # each image once, on one process
    for key in ("val_loss", "top_1", "top_5"):  # the same val metrics on both (train_loss is each one's own)
        assert runs[0]["last"][key] == runs[1]["last"][key]
    row = read_metrics(cut)[-1]
    assert row["epoch"] == "3"
    # the train loss over both processes' micro-batches
    assert abs(float(read_metrics(full.out)[-1]["train_loss"]) - float(row["train_loss"])) <= 1e-5
    single = evaluate(load_for_inference(str(cut / "checkpoints" / "epoch_003.ckpt")), os.path.join(full.data, "val"),
                      log=lambda *a: None)
    assert abs(single["loss"] - float(row["val_loss"])) <= 1e-5
    assert abs(single["top_1"] - float(row["top_1"])) <= 1e-6 and abs(single["top_5"] - float(row["top_5"])) <= 1e-6


def _launch(args, env_extra=None, cwd=None):
    env = {**os.environ, "PYTHON": sys.executable, **(env_extra or {})}
    return subprocess.Popen(["bash", os.path.join(ROOT, "run_finetune.sh"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_port_taken_sees_a_listener_on_a_local_address_only():
    """run_finetune.sh's probe for a second scheduler on one host: a socket question, whatever GLOG_v is."""
    from ms_vit.distributed import port_taken

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        probe = subprocess.run([sys.executable, os.path.join(ROOT, "ms_vit", "distributed.py"), "port_taken",
                                "127.0.0.1", str(port)])
        assert probe.returncode == 0  # as run_finetune.sh calls it, without importing MindSpore
    assert not port_taken("127.0.0.1", port)
    assert not port_taken("192.0.2.1", port)  # TEST-NET-1: not an address of this host
    assert not port_taken("no-such-host.invalid", port)


def test_two_machines_of_two_processes_on_one_host_train_like_one_process_and_only_node_0_writes(full, tmp_path):
    """Two run_finetune.sh launches (node_rank 0 and 1, master 127.0.0.1), each with --device_num 2: msrun starts 2
    processes on each "machine", and the 4 of them, each taking a quarter of every batch, end with the weights of one
    process on the whole batch (the averaged gradients give its steps). Each launch's workers log into its
    OUTPUT_DIR/msrun_logs/; node 1's output_dir gets no checkpoint.

    Under GLOG_v=3 (errors only): node 1's own scheduler cannot bind node 0's port and exits, and its scheduler.log
    holds no "Address already in use" (a WARNING line); run_finetune.sh still recognises it and node 1 succeeds."""
    port = _free_port()
    quiet = {"GLOG_v": "3"}
    args = run_args(full) + ["--device_num", "2", "--node_num", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(port)]
    nodes = [_launch([*args, "--node_rank", "0", "--output_dir", str(tmp_path / "node0")], quiet, cwd=tmp_path)]
    deadline = time.monotonic() + 60  # node 0 first, as on real machines: its scheduler listens before node 1 starts
    while time.monotonic() < deadline and nodes[0].poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    nodes.append(_launch([*args, "--node_rank", "1", "--output_dir", str(tmp_path / "node1")], quiet, cwd=tmp_path))
    results = [_finish(node) for node in nodes]
    for code, out, err in results:
        assert code == 0, out[-3000:] + err[-3000:]
    scheduler_log = (tmp_path / "node1" / "msrun_logs" / "scheduler.log").read_text()
    assert "Address already in use" not in scheduler_log  # the line the old check read is not there under GLOG_v=3
    for node, ranks in (("node0", (0, 1)), ("node1", (2, 3))):
        logs = sorted(n for n in os.listdir(tmp_path / node / "msrun_logs") if n.startswith("worker_"))
        assert logs == [f"worker_{rank}.log" for rank in ranks]
    reference = training_state(full.out)
    difference = max_difference(reference, training_state(tmp_path / "node0"))
    print(f"4 processes on two machines vs one process: max difference {difference:.2e}")
    assert difference <= 1e-6
    ms.set_seed(0)
    initial = {p.name: p.asnumpy() for p in ms_vit.create_model(TINY, num_classes=3).get_parameters()}
    assert float(np.abs(reference["dense.weight"] - initial["dense.weight"]).max()) > 1e-4  # not trivially equal
    assert not list((tmp_path / "node1").rglob("*.ckpt")) and not (tmp_path / "node1" / "best.ckpt").exists()


def test_a_node_that_cannot_reach_its_master_fails_in_bounded_time_naming_address_and_port(tmp_path):
    """Node 1 of 2, its master at an address of this host where nothing listens (127.0.0.2: loopback, not one of
    the host's own addresses, so msrun starts no scheduler here as it would for a local master address)."""
    port = _free_port()
    make_image_folder(tmp_path / "data", n_train=2, n_val=1, size=32)
    started = time.monotonic()
    code, out, err = _finish(_launch(["--model", TINY, "--image_size", "32", "--data_dir", str(tmp_path / "data"),
                                      "--output_dir", str(tmp_path / "out"), "--node_num", "2", "--node_rank", "1",
                                      "--master_addr", "127.0.0.2", "--master_port", str(port)],
                                     {"CLUSTER_TIMEOUT": "1"}, cwd=tmp_path), timeout=120)
    assert code != 0 and time.monotonic() - started < 100
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"127.0.0.2:{port}" in lines[0], err
