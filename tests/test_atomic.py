"""ms_vit.atomic: the temporary file beside the target, flushed and renamed on success, removed on failure."""

import json
import os

import pytest

from ms_vit import atomic
from ms_vit.atomic import atomic_path, write_json_atomic, write_text_atomic


class Crash(Exception):
    pass


@pytest.mark.parametrize("error", [Crash, KeyboardInterrupt])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path, error):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half of the new")
            raise error()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_failing_first_write_leaves_nothing(tmp_path):
    with pytest.raises(Crash):
        with atomic_path(tmp_path / "metrics.csv") as tmp:
            open(tmp, "w").close()
            raise Crash()
    assert os.listdir(tmp_path) == []


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError):
        with atomic_path(target):
            pass
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_success_replaces_the_file_whole_after_flushing_it(tmp_path, monkeypatch):
    target = tmp_path / "big.txt"
    target.write_text("old")
    os.chmod(target, 0o400)  # a read-only target (as MindSpore leaves checkpoints) is replaced too
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    text = "".join(f"line {i}\n" for i in range(100_000))
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp) == f"big.txt.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        assert target.read_text() == "old"  # not before the writer is done
    assert target.read_text() == text
    assert os.listdir(tmp_path) == ["big.txt"]
    assert events == ["fsync", "replace", "fsync"]  # the file before the rename, the folder after it


def test_the_temporary_name_follows_the_template(tmp_path):
    with atomic_path(tmp_path / "curves.png", "{name}.{pid}.tmp.png") as tmp:
        assert tmp == str(tmp_path / f"curves.png.{os.getpid()}.tmp.png")
        open(tmp, "wb").close()
    with atomic_path(str(tmp_path / "w.ckpt"), "{name}.part") as tmp:
        assert tmp == str(tmp_path / "w.ckpt.part")
        open(tmp, "wb").close()
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "w.ckpt"]
    for bad in ("{name}", "../{name}.tmp", "sub/{name}.tmp"):
        with pytest.raises(ValueError, match="same folder"):
            with atomic_path(tmp_path / "x", bad):
                pass


def test_leftovers_of_a_crash_are_what_fine_tune_clears(tmp_path):
    from ms_vit.checkpoint import save
    from ms_vit.checkpoint.resume import remove_partial_files

    for name, template in (("train_state.json", atomic.TEMP_NAME), ("curves.png", "{name}.{pid}.tmp.png"),
                           ("epoch_001.ckpt", save.TEMP_NAME)):
        (tmp_path / template.format(name=name, pid=4321)).write_text("torn")
        (tmp_path / name).write_text("whole")
    remove_partial_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "epoch_001.ckpt", "train_state.json"]


def test_json_and_text(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"epoch": 3, "names": ["a", "é"]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"epoch": 3, "names": ["a", "é"]}
    assert (tmp_path / "s.json").read_text() == json.dumps({"epoch": 3, "names": ["a", "é"]}, indent=2)
    write_text_atomic(tmp_path / "t.txt", "ünï\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "ünï\n"
    assert sorted(os.listdir(tmp_path)) == ["s.json", "t.txt"]
