"""--precision of eval.py and infer.py: bf16 inference gives the fp32 model's top-1 with logits within bf16 rounding,
the report and predictions.json say which precision ran and why, and every refusal is one line naming the flag.

conftest sets MS_VIT_BF16=0, so auto stays fp32 here on every CPU; the bf16 tests ask for bf16 themselves (on a CPU
without bf16 instructions the kernel then runs the bf16 numbers at fp32's speed)."""

import glob
import json
import os

import numpy as np
import pytest

import ms_vit
from ms_vit.cli import run
from ms_vit.evaluate.run import Precision, folder_logits, load_for_inference, resolve_precision
from ms_vit.kernels import gate as kbuild
from test_scripts import script


def kernel_or_skip():
    path, reason = kbuild.build()
    if path is None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The tiny run's best checkpoint and its val folder."""
    return (glob.glob(os.path.join(str(tiny_run.output_dir), "**", "best.ckpt"), recursive=True)[0],
            os.path.join(tiny_run.data_dir, "val"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_eval_in_bf16_keeps_top1_and_logits_within_bf16_rounding(trained, tmp_path, capsys):
    kernel_or_skip()
    ckpt, val = trained
    reports = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision / "report.json"
        assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", val, "--json", str(out),
                                    "--precision", precision]) == 0
        reports[precision] = json.loads(out.read_text())
        assert f"precision: {precision} (--precision {precision}" in capsys.readouterr().out
    assert reports["bf16"]["precision"] == "bf16" and reports["fp32"]["precision"] == "fp32"
    assert reports["bf16"]["precision_reason"].startswith("--precision bf16")
    assert reports["bf16"]["top_1"] == reports["fp32"]["top_1"]

    # The same path without the script: the logits themselves, in GRAPH mode.
    fp32, bf16 = load_for_inference(ckpt, precision="fp32"), load_for_inference(ckpt, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    want, got = folder_logits(fp32, val)["logits"], folder_logits(bf16, val)["logits"]
    diff = np.abs(got - want).max()
    # Each operand rounded to bf16 (8 significant bits) moves a product by at most 2 * 2^-9 of it, through the few
    # GEMMs of two blocks; a wrong kernel (transposes, fp32 left on) is far outside or exactly 0.
    assert 0 < diff < 0.02 * np.abs(want).max(), diff
    assert (got.argmax(1) == want.argmax(1)).all()


def test_infer_in_bf16_says_so_in_predictions_json(trained, tmp_path, capsys):
    kernel_or_skip()
    ckpt, val = trained
    out = tmp_path / "infer"
    assert run(script("infer"), ["--ckpt", ckpt, "--input", val, "--output", str(out), "--precision", "bf16"]) == 0
    assert "precision: bf16 (--precision bf16" in capsys.readouterr().out
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["precision"] == "bf16" and saved["precision_reason"].startswith("--precision bf16")


@pytest.mark.parametrize("name", ["eval", "infer"])
def test_bf16_on_a_gpu_is_one_line(name, trained, tmp_path, capsys):
    ckpt, val = trained
    argv = ["--ckpt", ckpt, "--precision", "bf16", "--device_target", "GPU"]
    argv += ["--data_dir", val] if name == "eval" else ["--input", val, "--output", str(tmp_path)]
    assert run(script(name), argv) == 2
    assert one_error_line(capsys) == ("error: --precision bf16 runs on CPU only, not GPU: use --precision fp32 (or "
                                      "auto) there")


def test_auto_is_fp32_under_ms_vit_bf16_0_and_says_why(trained, tmp_path, capsys):
    assert os.environ.get("MS_VIT_BF16") == "0"  # conftest's
    ckpt, val = trained
    out = tmp_path / "report.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", val, "--json", str(out)]) == 0
    why = "--precision auto on CPU: fp32 (MS_VIT_BF16=0 in the environment keeps fp32)"
    assert f"precision: fp32 ({why})" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["precision"], report["precision_reason"]) == ("fp32", why)
    assert run(script("infer"), ["--ckpt", ckpt, "--input", val, "--output", str(tmp_path / "infer")]) == 0
    saved = json.loads((tmp_path / "infer" / "predictions.json").read_text())
    assert (saved["precision"], saved["precision_reason"]) == ("fp32", why)


def test_resolve_precision_follows_amp_levels_rules(monkeypatch):
    yes, no = (lambda: (True, "CPU has avx512_bf16")), (lambda: (False, "CPU has no avx512_bf16 or amx_bf16"))
    assert resolve_precision("auto", "CPU", gate=yes) == Precision("bf16", "--precision auto on CPU: bf16 "
                                                                             "(CPU has avx512_bf16)")
    assert resolve_precision("auto", "CPU", gate=no).name == "fp32"
    assert resolve_precision("auto", "GPU", gate=yes).name == "fp32"  # the kernel is a CPU one
    assert resolve_precision("fp32", "CPU", gate=yes) == Precision("fp32", "--precision fp32")

    def unbuilt():
        return None, "no C++ compiler (g++ not on PATH): install g++ (e.g. apt-get install g++) or set CXX"

    monkeypatch.setattr(ms_vit.kernels.gate, "build", unbuilt)
    with pytest.raises(ms_vit.ConfigError, match=r"^--precision bf16: no C\+\+ compiler .*; or use --precision "
                                                 r"fp32$"):
        resolve_precision("bf16", "CPU", gate=yes)
    monkeypatch.undo()
    kernel_or_skip()
    taken = resolve_precision("bf16", "CPU", gate=no)
    assert taken.name == "bf16" and taken.reason == ("--precision bf16: as asked, without the speed: CPU has no "
                                                     "avx512_bf16 or amx_bf16")
    with pytest.raises(ms_vit.ConfigError, match="--precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", "CPU")
