"""First contact: run_finetune.sh refuses an unwritable output folder in one line before anything starts, and a
first download without a recorded checksum prints the SHA-256 and the key that pins it."""

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import zipfile

from conftest import ROOT, TINY

from ms_vit.config import make_train_config


def launch(args, cwd):
    return subprocess.run(["bash", os.path.join(ROOT, "run_finetune.sh"), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120)


def test_an_unwritable_output_dir_is_one_line_before_anything_starts(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # under a file: no user (root included) can create it
    proc = launch(["--model", TINY, "--data_dir", str(tmp_path / "data"), "--output_dir", str(out)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: cannot write the output folder {out}: choose another --output_dir\n"
    assert "GLOG" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_the_recipes_output_dir_is_checked_when_no_output_dir_is_given(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {TINY}\ndata_dir: {tmp_path / 'data'}\noutput_dir: {blocker / 'from_recipe'}\n")
    proc = launch(["--config", str(recipe)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: cannot write the output folder {blocker / 'from_recipe'}: choose another "
                           "--output_dir\n")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(folder):
    """``folder`` over HTTP on 127.0.0.1 (the download package refuses file:// URLs)."""
    handler = functools.partial(Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_first_dataset_download_prints_the_dataset_sha256_to_pin(tmp_path, monkeypatch):
    from ms_vit.data.sources import resolve_data_dir

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "shapes.zip", "w") as archive:
        archive.writestr("shapes/train/a/0.jpg", b"x")
        archive.writestr("shapes/val/a/0.jpg", b"x")
    digest = hashlib.sha256((served / "shapes.zip").read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)  # the download goes to ./dataset
    lines = []
    with serving(served) as url:
        root = resolve_data_dir(make_train_config({"dataset_url": f"{url}/shapes.zip"}).section("data"), lines.append)
    assert os.path.isdir(os.path.join(root, "train"))
    assert any(line.endswith(f"(pin it with dataset_sha256: {digest})") for line in lines), lines


def test_a_first_pretrained_download_prints_the_pretrained_sha256_to_pin(tiny_run, tmp_path, monkeypatch):
    from ms_vit.train.run import resolve

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(tiny_run.output_dir / "best.ckpt", served / "tiny.ckpt")
    digest = hashlib.sha256((served / "tiny.ckpt").read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)  # the download goes to ./ckpt
    lines = []
    with serving(served) as url:
        cfg = make_train_config({"model": TINY, "image_size": 32, "data_dir": tiny_run.data_dir,
                                 "pretrained": f"{url}/tiny.ckpt", "output_dir": str(tmp_path / "out")})
        plan = resolve(cfg, log=lines.append)
    assert plan.weights == os.path.join("ckpt", "tiny.ckpt")
    assert any(line.endswith(f"(pin it with pretrained_sha256: {digest})") for line in lines), lines


def test_fine_tune_checks_the_output_folder_before_it_generates_data_or_reads_weights(tmp_path):
    import pytest

    from ms_vit.errors import ConfigError
    from ms_vit.train.run import fine_tune

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = make_train_config({"model": TINY, "demo_data": True, "data_dir": str(tmp_path / "demo"),
                             "pretrained": str(tmp_path / "missing.ckpt"), "output_dir": str(blocker / "run")})
    with pytest.raises(ConfigError, match=r"output folder \S+a_file/run is not writable: \S+a_file is a file"):
        fine_tune(cfg, log=lambda *a: None)
    assert not (tmp_path / "demo").exists()  # nothing generated, and the missing weights were never reached
