import os

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
    printed = capsys.readouterr().out
    assert f"wrote {out}: input (3, 3, 32, 32)" in printed
    assert "checked with ms.load + nn.GraphCell at batch 3" in printed
    graph = nn.GraphCell(ms.load(str(out)))
    x = images(3)
    np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), logits_of(net, x), atol=1e-5)


def test_mindir_export_has_a_dynamic_batch_by_default(tiny_run, tmp_path, images, capsys):
    ckpt, net = trained(tiny_run)
    out = tmp_path / "m.mindir"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "MINDIR", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input (batch, 3, 32, 32)" in printed and "the batch dimension is dynamic" in printed
    assert "at batch 1: max logit difference" in printed and "at batch 3: max logit difference" in printed
    graph = nn.GraphCell(ms.load(str(out)))
    for batch in (1, 3):
        x = images(batch, seed=batch)
        np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), logits_of(net, x), atol=1e-5)


def onnx_logits(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_onnx_export_runs_in_onnxruntime_with_ms_vits_logits(tiny_run, tmp_path, images, capsys):
    pytest.importorskip("onnxruntime")
    ckpt, net = trained(tiny_run)
    out = tmp_path / "m.onnx"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "onnx", "--batch_size", "2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: input (2, 3, 32, 32)" in printed and "checked with onnxruntime" in printed
    assert "at batch 2: max logit difference" in printed
    x = images(2)
    theirs, ours = onnx_logits(out, x), logits_of(net, x)
    assert np.abs(theirs - ours).max() <= 1e-4 * max(1.0, np.abs(ours).max())


def test_onnx_export_has_a_dynamic_batch_by_default(tiny_run, tmp_path, images, capsys):
    """MindSpore's exporter refuses a dynamic input; the default file still runs at batch 1 and 3 in onnxruntime
    with ms_vit's logits, and its input and output name the first dimension ``batch``."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    ckpt, net = trained(tiny_run)
    out = tmp_path / "m.onnx"
    assert run(script("export"), ["--ckpt", ckpt, "--format", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input (batch, 3, 32, 32)" in printed
    assert "at batch 1: max logit difference" in printed and "at batch 3: max logit difference" in printed
    model = onnx.load(str(out))
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 3, 5):
        x = images(batch, seed=batch)
        theirs, ours = onnx_logits(out, x), logits_of(net, x)
        assert theirs.shape == (batch, 3)
        assert np.abs(theirs - ours).max() <= 1e-4 * max(1.0, np.abs(ours).max())
    assert not [f for f in os.listdir(tmp_path) if f != "m.onnx"]  # the two traced graphs are gone


def test_default_output_names_say_dynamic_or_the_batch(tiny_run, tmp_path, capsys):
    import shutil

    ckpt = str(tmp_path / "best.ckpt")
    shutil.copy(tiny_run.output_dir / "best.ckpt", ckpt)
    assert run(script("export"), ["--ckpt", ckpt]) == 0
    assert run(script("export"), ["--ckpt", ckpt, "--batch_size", "2"]) == 0
    assert {"best_dynamic.mindir", "best_b2.mindir"} <= set(os.listdir(tmp_path))


def _constant_model(values: dict, dtype=np.int64):
    """A one-input ONNX graph: Reshape(x, shape) then Add(., bias), with the constants in ``values``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array(values["shape"],
                                                                                                  np.int64))),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Add", ["flat", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, values["x"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [values["shape"][0], 4])],
                              [numpy_helper.from_array(np.array(values["bias"], np.float32), "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_dynamic_onnx_computes_batch_constants_and_refuses_float_ones():
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ms_vit.export import ExportError, dynamic_onnx

    two = _constant_model({"x": [2, 3, 4], "shape": [2 * 3, 4], "bias": [1.0]})
    three = _constant_model({"x": [3, 3, 4], "shape": [3 * 3, 4], "bias": [1.0]})
    model = dynamic_onnx(two, three, 2, 3)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.arange(5 * 12, dtype=np.float32).reshape(5, 3, 4)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x.reshape(15, 4) + 1)

    other = _constant_model({"x": [3, 3, 4], "shape": [3 * 3, 4], "bias": [2.0]})
    with pytest.raises(ExportError, match="--batch_size") as err:
        dynamic_onnx(two, other, 2, 3)
    assert "\n" not in str(err.value)


def test_onnx_check_without_onnxruntime_says_how_to_install(tiny_run, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "onnxruntime" else real_import(name, *a, **k))
    ckpt, _ = trained(tiny_run)
    assert run(script("export"), ["--ckpt", ckpt, "--format", "ONNX", "--output", str(tmp_path / "m.onnx")]) == 0
    assert "pip install onnxruntime" in capsys.readouterr().out


def test_a_dynamic_onnx_export_without_the_onnx_package_is_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    ckpt, _ = trained(tiny_run)
    assert run(script("export"), ["--ckpt", ckpt, "--format", "ONNX", "--output", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == ("error: a dynamic-batch ONNX file needs the onnx package: pip install onnx, or "
                                       "give --batch_size N for a fixed batch\n")
    assert not os.listdir(tmp_path)


def test_an_erf_model_on_the_gelu_kernel_exports_a_mindir_that_loads(tmp_path, images):
    from ms_vit.export import export_mindir
    from ms_vit.models.layers import ErfGELU

    net = ms_vit.create_model(TINY, gelu="erf")
    net.set_train(False)
    if not any(isinstance(cell, ErfGELU) for _, cell in net.cells_and_names()):
        pytest.skip("the erf-GELU kernel cannot be built here: the model already runs MindSpore's GELU")
    x = images(3)
    expected = net(ms.Tensor(x)).asnumpy()
    graph = ms.nn.GraphCell(ms.load(export_mindir(net, str(tmp_path / "erf.mindir"))))
    for batch in (1, 3):
        np.testing.assert_allclose(graph(ms.Tensor(x[:batch])).asnumpy(), expected[:batch], atol=1e-5)
    assert not any(isinstance(cell, ErfGELU) for _, cell in net.cells_and_names())


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
