"""The entry points, called in-process: options reach the library, errors are one line without a traceback."""

import importlib.util
import os

import pytest
from conftest import ROOT

from ms_vit.cli import run


def script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_summary_of_a_preset(capsys):
    assert run(script("summary"), ["vit_tiny_test", "--num_classes", "7", "--image_size", "48",
                                   "--batch_size", "2", "--compare_modes"]) == 0
    out = capsys.readouterr().out
    assert "image 48px" in out and "classes 7" in out
    assert "parameters: 24,775" in out  # 24,234 + 20 position tokens x 32 - 3 classes x 33
    assert "forward batch   2 (GRAPH)" in out
    assert "GRAPH vs PYNATIVE max abs logit difference: 0" in out


def test_summary_of_a_checkpoint_prints_the_load_report(capsys, tmp_path):
    import ms_vit

    net = ms_vit.create_model("vit_tiny_test")
    path = ms_vit.save_checkpoint(net, tmp_path / "m.ckpt", meta={"model": net.config.to_dict()})
    assert run(script("summary"), [path]) == 0
    assert f"loaded 32 parameters from {path}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, fragment", [
    (["missing.ckpt"], "checkpoint file missing.ckpt does not exist"),
    (["vit_b16"], "unknown model name 'vit_b16'; did you mean vit_b_16?"),
    (["vit_tiny_test", "--image_size", "30"], "image_size 30 is not divisible by patch_size 8"),
])
def test_bad_input_is_one_line_without_traceback(capsys, argv, fragment):
    assert run(script("summary"), argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {err.strip()[7:]}"] and fragment in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback():
    import ms_vit

    with pytest.raises(ms_vit.CheckpointError):
        run(script("summary"), ["missing.ckpt", "--debug"])
