"""Downloads through the `download` package from a local HTTP server on 127.0.0.1."""

import functools
import hashlib
import http.server
import os
import threading
import zipfile

import pytest

import ms_vit
from ms_vit.download import fetch, find_split_root, unpack


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, requests
    httpd.shutdown()


def test_download_checks_the_checksum_and_is_reused(server, tmp_path):
    url, served, requests = server
    (served / "w.ckpt").write_bytes(b"weights" * 1000)
    good = hashlib.sha256(b"weights" * 1000).hexdigest()
    dest = tmp_path / "ckpt"
    path = fetch(f"{url}/w.ckpt", str(dest), sha256=good, log=lambda *a: None)
    assert path == str(dest / "w.ckpt") and open(path, "rb").read() == b"weights" * 1000
    count = len(requests)
    assert fetch(f"{url}/w.ckpt", str(dest), sha256=good, log=lambda *a: None) == path
    assert len(requests) == count  # reused, not fetched again


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    url, served, _ = server
    (served / "w.ckpt").write_bytes(b"tampered")
    dest = tmp_path / "ckpt"
    with pytest.raises(ms_vit.ConfigError, match="does not match the recorded 0000"):
        fetch(f"{url}/w.ckpt", str(dest), sha256="0" * 64, log=lambda *a: None)
    assert os.listdir(dest) == []


def test_unreachable_url_is_one_line(server, tmp_path):
    url, _, _ = server
    with pytest.raises(ms_vit.ConfigError, match="cannot download .*missing.ckpt"):
        fetch(f"{url}/missing.ckpt", str(tmp_path / "ckpt"), log=lambda *a: None)
    assert not os.path.exists(tmp_path / "ckpt" / "missing.ckpt")


def test_dataset_archive_is_downloaded_and_unpacked(server, tmp_path):
    url, served, _ = server
    with zipfile.ZipFile(served / "data.zip", "w") as archive:
        archive.writestr("dataset/train/a/0.jpg", b"x")
        archive.writestr("dataset/val/a/0.jpg", b"x")
    path = fetch(f"{url}/data.zip", str(tmp_path / "dl"), log=lambda *a: None)
    root = find_split_root(unpack(path, str(tmp_path / "dl" / "data")))
    assert root == str(tmp_path / "dl" / "data" / "dataset")
    assert unpack(path, str(tmp_path / "dl" / "data")) == str(tmp_path / "dl" / "data")  # once only


def test_local_paths_pass_through(tmp_path):
    local = tmp_path / "m.ckpt"
    local.write_bytes(b"abc")
    assert fetch(str(local), str(tmp_path / "ckpt")) == str(local)
    with pytest.raises(ms_vit.ConfigError, match="does not match"):
        fetch(str(local), str(tmp_path / "ckpt"), sha256="1" * 64)


def test_a_first_download_without_a_checksum_prints_it_and_the_key_to_pin_it(server, tmp_path):
    url, served, _ = server
    (served / "w.ckpt").write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(b"weights" * 1000).hexdigest()
    lines = []
    fetch(f"{url}/w.ckpt", str(tmp_path / "ckpt"), log=lines.append, key="pretrained_sha256")
    assert len(lines) == 1 and f"SHA-256 {digest}" in lines[0]
    assert lines[0].endswith(f"(pin it with pretrained_sha256: {digest})")
    lines.clear()
    fetch(f"{url}/w.ckpt", str(tmp_path / "again"), sha256=digest, log=lines.append, key="pretrained_sha256")
    assert "pin it" not in lines[0] and "SHA-256 checked" in lines[0]  # a recorded checksum: nothing to pin
