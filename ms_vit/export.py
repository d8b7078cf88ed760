"""Exports that serve: MindIR and ONNX files whose batch dimension is dynamic, and their parity checks.

MindIR: ``ms.export`` takes an input of shape ``[None, C, H, W]`` and writes a graph that ``ms.load`` +
``nn.GraphCell`` runs at any batch size.

ONNX: MindSpore 2.10's exporter refuses a dynamic input ("Export ONNX format model not support dynamic shape
mode"), and the graph it writes for a fixed batch holds that batch in constants (the shapes of Reshape, the repeats
of Tile). ``dynamic_onnx`` therefore exports the network at two batch sizes, checks that the two graphs differ only
in integer constants that are linear in the batch (``a + batch * k``), and writes the first graph with each such
constant computed from the input's batch dimension at run time; the input's and the output's first dimension are
named ``batch``. Anything else that differs (a float constant, another graph structure) is refused with one line, and
``--batch_size`` exports a fixed batch as before.
"""

from __future__ import annotations

import os

import numpy as np

from ms_vit.errors import MsVitError

# The two batch sizes the dynamic ONNX graph is derived from: two, so a constant's dependence on the batch is found
# as a line; neither is 1, which could hide a batch factor among the shapes' other 1s.
ONNX_TRACE_BATCHES = (2, 3)
# The batch sizes the parity check runs a dynamic export at (and the fixed batch of a fixed one).
CHECK_BATCHES = (1, 3)
BATCH_DIM = "batch"


class ExportError(MsVitError):
    """An export that cannot be written, or whose file does not reproduce ms_vit's logits."""


def set_onnx_mode(net, on: bool = True) -> None:
    """ONNX has no Unstack: the attention splits q, k, v by slicing while exporting (slower on CPU otherwise)."""
    from ms_vit.models.vit import Attention

    for _, cell in net.cells_and_names():
        if isinstance(cell, Attention):
            cell.onnx_export = on


def _sample(net, batch):
    import mindspore as ms

    cfg = net.config
    shape = [batch, cfg.in_channels, cfg.image_size, cfg.image_size]
    if batch is None:
        return ms.Tensor(shape=shape, dtype=ms.float32)
    return ms.Tensor(np.zeros(shape, np.float32))


def _ms_export(net, batch, stem: str, file_format: str) -> str:
    import mindspore as ms

    suffix = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}[file_format]
    from ms_vit.models.layers import use_portable_ops

    use_portable_ops(net)
    try:
        ms.export(net, _sample(net, batch), file_name=stem, file_format=file_format)
    except (RuntimeError, ValueError, TypeError) as err:
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"export to {file_format} failed ({line}): MINDIR is supported on every device; "
                          "AIR needs Ascend") from err
    return stem + suffix


def export_mindir(net, path: str, batch_size: int | None = None) -> str:
    """Write ``net`` as MindIR to ``path`` (ending .mindir); ``batch_size`` None: a dynamic batch dimension."""
    return _ms_export(net, batch_size, _stem(path, ".mindir"), "MINDIR")


def export_air(net, path: str, batch_size: int = 1) -> str:
    """Write ``net`` as AIR (Ascend only) to ``path`` with a fixed batch."""
    return _ms_export(net, batch_size, _stem(path, ".air"), "AIR")


def export_onnx(net, path: str, batch_size: int | None = None) -> str:
    """Write ``net`` as ONNX to ``path`` (ending .onnx); ``batch_size`` None: a dynamic batch dimension named
    ``batch`` (see ``dynamic_onnx``), else that fixed batch. Raises ExportError when the dynamic graph cannot be
    derived (the message says to give --batch_size)."""
    set_onnx_mode(net, True)
    try:
        stem = _stem(path, ".onnx")
        if batch_size is not None:
            return _ms_export(net, batch_size, stem, "ONNX")
        try:
            import onnx
        except ImportError as err:
            raise ExportError("a dynamic-batch ONNX file needs the onnx package: pip install onnx, or give --batch_size N "
                              "for a fixed batch") from err

        first, second = ONNX_TRACE_BATCHES
        traced = []
        for batch in ONNX_TRACE_BATCHES:
            tmp = _ms_export(net, batch, f"{stem}.b{batch}.{os.getpid()}.tmp", "ONNX")
            try:
                traced.append(onnx.load(tmp))
            finally:
                os.remove(tmp)
        model = dynamic_onnx(traced[0], traced[1], first, second)
        from ms_vit.atomic import atomic_path

        with atomic_path(stem + ".onnx") as tmp:
            onnx.save(model, tmp)
        return stem + ".onnx"
    finally:
        set_onnx_mode(net, False)


def _stem(path: str, suffix: str) -> str:
    path = os.fspath(path)
    return path[: -len(suffix)] if path.endswith(suffix) else path


def _int_constants(model) -> list:
    """[(kind, index, array)] of the graph's int64 constants: initializers and Constant nodes' values, in order."""
    import onnx
    from onnx import numpy_helper

    found = [("init", i, numpy_helper.to_array(t)) for i, t in enumerate(model.graph.initializer)]
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    found.append(("node", i, numpy_helper.to_array(attr.t)))
    return found


def dynamic_onnx(model_a, model_b, batch_a: int, batch_b: int):
    """The ONNX graph ``model_a`` (traced at batch ``batch_a``) with a dynamic batch dimension, given the same network
    traced at ``batch_b``: every constant that differs between the two must be an int64 tensor ``a + batch * k``
    (integer ``k``); it becomes ``Add(a, Mul(batch, k))`` with ``batch`` read from the input's shape.

    Raises ExportError naming what differs otherwise.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph_a, graph_b = model_a.graph, model_b.graph
    if ([n.op_type for n in graph_a.node] != [n.op_type for n in graph_b.node]
            or len(graph_a.initializer) != len(graph_b.initializer) or len(graph_a.input) != 1):
        raise ExportError("the ONNX graphs MindSpore writes at two batch sizes differ in structure: a dynamic batch "
                          "cannot be derived; export a fixed batch with --batch_size")
    for node_a, node_b in zip(graph_a.node, graph_b.node):
        if node_a.op_type != "Constant" and list(node_a.attribute) != list(node_b.attribute):
            raise ExportError(f"the ONNX node {node_a.op_type} ({node_a.name}) has batch-dependent attributes: a "
                              "dynamic batch cannot be derived; export a fixed batch with --batch_size")
    linear = []  # (kind, index, a, k)
    for (kind, index, value_a), (_, _, value_b) in zip(_int_constants(model_a), _int_constants(model_b)):
        if value_a.shape == value_b.shape and np.array_equal(value_a, value_b):
            continue
        where = graph_a.initializer[index].name if kind == "init" else graph_a.node[index].name
        step = (value_b.astype(np.int64) - value_a) if value_a.shape == value_b.shape else None
        if value_a.dtype != np.int64 or step is None or np.any(step % (batch_b - batch_a)):
            raise ExportError(f"the ONNX constant {where} changes with the batch size in a way that cannot be "
                              "computed from it: a dynamic batch cannot be derived; export a fixed batch with "
                              "--batch_size")
        k = step // (batch_b - batch_a)
        linear.append((kind, index, value_a - batch_a * k, k))

    model = onnx.ModelProto()
    model.CopyFrom(model_a)
    graph = model.graph
    input_name = graph.input[0].name
    shape, batch = "ms_vit_batch_shape", "ms_vit_batch"
    prelude = [helper.make_node("Shape", [input_name], [shape], name="ms_vit_batch_shape"),
               helper.make_node("Gather", [shape, "ms_vit_batch_index"], [batch], axis=0, name="ms_vit_batch")]
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "ms_vit_batch_index"))
    replaced = {}  # node index -> the nodes computing its value
    for n, (kind, index, a, k) in enumerate(linear):
        name_a, name_k, name_bk = f"ms_vit_dyn{n}_a", f"ms_vit_dyn{n}_k", f"ms_vit_dyn{n}_bk"
        graph.initializer.extend([numpy_helper.from_array(a, name_a), numpy_helper.from_array(k, name_k)])
        if kind == "init":  # an initializer becomes a computed value of the same name
            init = graph.initializer[index]
            out = init.name
            nodes = [helper.make_node("Mul", [batch, name_k], [name_bk], name=f"ms_vit_dyn{n}_mul"),
                     helper.make_node("Add", [name_a, name_bk], [out], name=f"ms_vit_dyn{n}_add")]
            prelude.extend(nodes)
            init.name = f"ms_vit_unused_{n}"
        else:
            out = graph.node[index].output[0]
            replaced[index] = [helper.make_node("Mul", [batch, name_k], [name_bk], name=f"ms_vit_dyn{n}_mul"),
                               helper.make_node("Add", [name_a, name_bk], [out], name=f"ms_vit_dyn{n}_add")]
    nodes = list(prelude)
    for index, node in enumerate(graph.node):
        nodes.extend(replaced.get(index, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    unused = [t for t in graph.initializer if t.name.startswith("ms_vit_unused_")]
    for tensor in unused:
        graph.initializer.remove(tensor)
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]  # intermediate shapes recorded at the traced batch would contradict other batches
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the dynamic-batch ONNX graph does not validate ({str(err).splitlines()[0]}): export a "
                          "fixed batch with --batch_size") from err
    return model


def _bound(ours) -> float:
    return 1e-4 * max(1.0, float(np.abs(ours).max()))


def _compare(net, path: str, run, batches, runtime: str) -> dict:
    """{batch: max |logit difference|} of ``run(x)`` against ``net(x)`` on random input at each batch size; raises
    when one is above 1e-4 x max(1, max |logit|)."""
    import mindspore as ms

    cfg = net.config
    net.set_train(False)
    diffs = {}
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal(
            (batch, cfg.in_channels, cfg.image_size, cfg.image_size)).astype(np.float32)
        ours = net(ms.Tensor(x)).asnumpy()
        theirs = run(x)
        if theirs.shape != ours.shape:
            raise ExportError(f"{path}: {runtime} gives logits of shape {theirs.shape} for a batch of {batch}, ms_vit "
                              f"{ours.shape}: do not deploy this file")
        diff = float(np.abs(theirs - ours).max())
        if not diff <= _bound(ours):
            raise ExportError(f"{path}: {runtime}'s logits differ from ms_vit's by {diff:.3g} at batch {batch} (bound "
                              f"{_bound(ours):.3g}): do not deploy this file; export MINDIR instead and report the "
                              "model")
        diffs[batch] = diff
    return diffs


def check_onnx(net, path: str, batches=CHECK_BATCHES) -> dict | None:
    """Run ``path`` with onnxruntime on random input at each of ``batches`` and compare with ``net``: {batch: max
    logit difference} (None when onnxruntime is not installed). Raises ExportError above the bound."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _compare(net, path, lambda x: session.run(None, {name: x})[0], batches, "onnxruntime")


def check_mindir(net, path: str, batches=CHECK_BATCHES) -> dict:
    """Load ``path`` with ``ms.load`` + ``nn.GraphCell``, run it at each of ``batches`` and compare with ``net``:
    {batch: max logit difference}. Raises ExportError above the bound."""
    import mindspore as ms
    from mindspore import nn

    graph = nn.GraphCell(ms.load(os.fspath(path)))
    return _compare(net, path, lambda x: graph(ms.Tensor(x)).asnumpy(), batches, "ms.load + nn.GraphCell")
