import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of
from mindspore import nn
from test_scripts import script

import ms_vit
from ms_vit.cli import run


def trained(tiny_run):
    """The shared tiny run's best.ckpt and the network it holds."""
    ckpt = str(tiny_run.output_dir / "best.ckpt")
    return ckpt, ms_vit.from_pretrained(ckpt)


def test_mindir_export_gives_the_same_logits(tiny_run, tmp_path, images, capsys):
    ckpt, net = trained(tiny_run)
    out = tmp_path / "m.mindir"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "MINDIR", "--batch_size", "3", "--output", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    graph = nn.GraphCell(ms.load(str(out)))
    x = images(3)
    np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), logits_of(net, x), atol=1e-5)


def test_onnx_export_runs_in_onnxruntime_with_ms_vits_logits(tiny_run, tmp_path, images, capsys):
    onnxruntime = pytest.importorskip("onnxruntime")
    ckpt, net = trained(tiny_run)
    out = tmp_path / "m.onnx"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "onnx", "--batch_size", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "checked with onnxruntime" in printed
    x = images(2)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = logits_of(net, x)
    assert np.abs(theirs - ours).max() <= 1e-4 * max(1.0, np.abs(ours).max())


def test_onnx_check_without_onnxruntime_says_how_to_install(tiny_run, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnxruntime" else real_import(name, *a, **k))
    ckpt, _ = trained(tiny_run)
    assert run(script("export"), ["--ckpt", ckpt, "--format", "ONNX", "--output", str(tmp_path / "m.onnx")]) == 0
    assert "pip install onnxruntime" in capsys.readouterr().out


def test_the_forward_keeps_unstack_outside_onnx_export():
    """Slicing q, k, v (what ONNX export needs) is 1.5x slower on CPU than Unstack: only export switches it on."""
    net = ms_vit.create_model(TINY)
    from ms_vit.models.vit import Attention

    assert all(not cell.onnx_export for _, cell in net.cells_and_names() if isinstance(cell, Attention))


def test_summary_counts_17_58_gmacs_for_vit_b_16(capsys):
    from ms_vit.models.complexity import total_macs
    from ms_vit.config import model_config

    assert round(total_macs(model_config("vit_b_16")) / 1e9, 2) == 17.58
    assert round(total_macs(model_config("vit_b_16", image_size=384)) / 1e9, 1) == 55.5
    assert run(script("summary"), ["vit_b_16"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 86,567,656" in out and "17.58" in out and "12 x MLP" in out
