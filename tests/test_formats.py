"""Every weight format into one cell: files written in each source's exact layout, logits compared."""

import json

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, logits_of
from safetensors.numpy import save_file

import ms_vit

L = "transformer.layers.{}."


def source_model(eps, gelu, heads=4, seed=0):
    """A tiny source network with the numerics of a source, and weights under which those numerics show in the
    logits (``numerics_visible``). Files without a config give no head count: ms_vit then assumes 64 dimensions per
    head, one head at this width, so those tests use heads=1."""
    ms.set_seed(seed)
    return numerics_visible(ms_vit.create_model(TINY, layer_norm_eps=eps, gelu=gelu, num_heads=heads), seed)


def numerics_visible(net, seed=0):
    """Random weights under which a wrong LayerNorm epsilon or GELU form changes the logits far beyond the tests'
    tolerance (checked by test_the_fixture_weights_tell_the_numerics_apart).

    At the default initialisation (std 0.02) neither shows: activations stay where tanh and erf GELU agree to 1e-7,
    and token variances dwarf 1e-6. Here the embedded tokens are ~1e-3 (variance ~1e-6, so epsilon 1e-6 against 1e-7
    moves the first LayerNorm by a third) and the dense weights 0.5 (pre-activations of a few units, where the two
    GELU forms differ by up to 5e-4)."""
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        if p.name == "patch_embedding.conv.weight":
            scale, offset = 1e-3 / 16, 0.0  # 192 inputs per output: tokens of ~1e-3
        elif p.name in ("cls", "pos_embedding", "patch_embedding.conv.bias"):
            scale, offset = 1e-3, 0.0
        else:
            scale, offset = 0.5, (1.0 if p.name.endswith("gamma") else 0.0)
        p.set_data(ms.Tensor((rng.standard_normal(p.shape) * scale + offset).astype(np.float32)))
    return net


def ours(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def to_timm(p, norm=("weight", "bias")):
    """Our weights in timm's VisionTransformer names (norm=("gamma", "beta"): mindcv's timm-style ViT)."""
    w, b = norm
    out = {"cls_token": p["cls"], "pos_embed": p["pos_embedding"], "patch_embed.proj.weight": p["patch_embedding.conv.weight"],
           "patch_embed.proj.bias": p["patch_embedding.conv.bias"], f"norm.{w}": p["norm.gamma"], f"norm.{b}": p["norm.beta"],
           "head.weight": p["dense.weight"], "head.bias": p["dense.bias"]}
    for i in range(2):
        s = L.format(i)
        out.update({f"blocks.{i}.norm1.{w}": p[s + "0.cell.0.gamma"], f"blocks.{i}.norm1.{b}": p[s + "0.cell.0.beta"],
                    f"blocks.{i}.attn.qkv.weight": p[s + "0.cell.1.qkv.weight"],
                    f"blocks.{i}.attn.qkv.bias": p[s + "0.cell.1.qkv.bias"],
                    f"blocks.{i}.attn.proj.weight": p[s + "0.cell.1.out.weight"],
                    f"blocks.{i}.attn.proj.bias": p[s + "0.cell.1.out.bias"],
                    f"blocks.{i}.norm2.{w}": p[s + "1.cell.0.gamma"], f"blocks.{i}.norm2.{b}": p[s + "1.cell.0.beta"],
                    f"blocks.{i}.mlp.fc1.weight": p[s + "1.cell.1.dense1.weight"],
                    f"blocks.{i}.mlp.fc1.bias": p[s + "1.cell.1.dense1.bias"],
                    f"blocks.{i}.mlp.fc2.weight": p[s + "1.cell.1.dense2.weight"],
                    f"blocks.{i}.mlp.fc2.bias": p[s + "1.cell.1.dense2.bias"]})
    return out


def to_hf(p):
    """Our weights in transformers' ViTForImageClassification names (as save_pretrained writes them)."""
    out = {"vit.embeddings.cls_token": p["cls"], "vit.embeddings.position_embeddings": p["pos_embedding"],
           "vit.embeddings.patch_embeddings.projection.weight": p["patch_embedding.conv.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": p["patch_embedding.conv.bias"],
           "vit.layernorm.weight": p["norm.gamma"], "vit.layernorm.bias": p["norm.beta"],
           "classifier.weight": p["dense.weight"], "classifier.bias": p["dense.bias"]}
    for i in range(2):
        s, h = L.format(i), f"vit.encoder.layer.{i}."
        qkv_w, qkv_b = np.split(p[s + "0.cell.1.qkv.weight"], 3), np.split(p[s + "0.cell.1.qkv.bias"], 3)
        for n, name in enumerate(("query", "key", "value")):
            out[h + f"attention.attention.{name}.weight"], out[h + f"attention.attention.{name}.bias"] = qkv_w[n], qkv_b[n]
        out.update({h + "attention.output.dense.weight": p[s + "0.cell.1.out.weight"],
                    h + "attention.output.dense.bias": p[s + "0.cell.1.out.bias"],
                    h + "layernorm_before.weight": p[s + "0.cell.0.gamma"], h + "layernorm_before.bias": p[s + "0.cell.0.beta"],
                    h + "layernorm_after.weight": p[s + "1.cell.0.gamma"], h + "layernorm_after.bias": p[s + "1.cell.0.beta"],
                    h + "intermediate.dense.weight": p[s + "1.cell.1.dense1.weight"],
                    h + "intermediate.dense.bias": p[s + "1.cell.1.dense1.bias"],
                    h + "output.dense.weight": p[s + "1.cell.1.dense2.weight"],
                    h + "output.dense.bias": p[s + "1.cell.1.dense2.bias"]})
    return out


def to_npz(p, heads=4):
    """Our weights in Google's vision_transformer layout (flax kernels: (in, out), per-head attention)."""
    d = p["norm.gamma"].shape[0]
    out = {"cls": p["cls"], "Transformer/posembed_input/pos_embedding": p["pos_embedding"],
           "embedding/kernel": p["patch_embedding.conv.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": p["patch_embedding.conv.bias"], "Transformer/encoder_norm/scale": p["norm.gamma"],
           "Transformer/encoder_norm/bias": p["norm.beta"], "head/kernel": p["dense.weight"].T,
           "head/bias": p["dense.bias"], "pre_logits/kernel": np.eye(d, dtype=np.float32)}
    for i in range(2):
        s, b = L.format(i), f"Transformer/encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_1/"
        for n, name in enumerate(("query", "key", "value")):
            out[a + f"{name}/kernel"] = np.split(p[s + "0.cell.1.qkv.weight"], 3)[n].T.reshape(d, heads, d // heads)
            out[a + f"{name}/bias"] = np.split(p[s + "0.cell.1.qkv.bias"], 3)[n].reshape(heads, d // heads)
        out[a + "out/kernel"] = p[s + "0.cell.1.out.weight"].T.reshape(heads, d // heads, d)
        out[a + "out/bias"] = p[s + "0.cell.1.out.bias"]
        out.update({b + "LayerNorm_0/scale": p[s + "0.cell.0.gamma"], b + "LayerNorm_0/bias": p[s + "0.cell.0.beta"],
                    b + "LayerNorm_2/scale": p[s + "1.cell.0.gamma"], b + "LayerNorm_2/bias": p[s + "1.cell.0.beta"],
                    b + "MlpBlock_3/Dense_0/kernel": p[s + "1.cell.1.dense1.weight"].T,
                    b + "MlpBlock_3/Dense_0/bias": p[s + "1.cell.1.dense1.bias"],
                    b + "MlpBlock_3/Dense_1/kernel": p[s + "1.cell.1.dense2.weight"].T,
                    b + "MlpBlock_3/Dense_1/bias": p[s + "1.cell.1.dense2.bias"]})
    return out


def save_ckpt(params, path):
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(path))
    return str(path)


def check_same_logits(source, path, images, fmt, atol=2e-5):
    loaded = ms_vit.from_pretrained(str(path))
    x = images(2)
    np.testing.assert_allclose(logits_of(loaded, x), logits_of(source, x), atol=atol, rtol=0)
    assert loaded.load_report.format == fmt
    return loaded


def test_timm_safetensors(tmp_path, images):
    net = source_model(1e-6, "erf", heads=1)
    path = tmp_path / "vit_tiny.safetensors"
    save_file(to_timm(ours(net)), str(path))
    loaded = check_same_logits(net, path, images, "timm")
    assert (loaded.config.layer_norm_eps, loaded.config.gelu, loaded.config.num_heads) == (1e-6, "erf", 1)


def test_hf_model_folder_gives_architecture_numerics_and_labels(tmp_path, images):
    net = source_model(1e-12, "erf")
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(to_hf(ours(net)), str(folder / "model.safetensors"))
    config = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 32,
              "patch_size": 8, "num_channels": 3, "qkv_bias": True, "id2label": {str(i): f"class{i}" for i in range(10)}}
    (folder / "config.json").write_text(json.dumps(config))
    loaded = check_same_logits(net, folder, images, "hf")
    assert loaded.config.num_heads == 4 and loaded.class_names[3] == "class3"


def test_google_npz(tmp_path, images):
    net = source_model(1e-6, "erf")
    path = tmp_path / "ViT-Ti_test.npz"
    np.savez(path, **to_npz(ours(net)))
    loaded = check_same_logits(net, path, images, "npz")
    assert loaded.config.num_heads == 4  # read from the per-head kernels
    assert "pre_logits/kernel" in loaded.load_report.ignored


class Tripwire:
    """A pickled object whose unpickling creates the file ``marker``: proof that something unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_pickles(kind, folder, marker):
    """A file (or HF folder) of weights that holds a pickle with a Tripwire; returns (path, the pickle's path)."""
    import pickle

    if kind == "npz":  # an object array: np.save pickles it
        path = folder / "weights.npz"
        np.savez(path, cls=np.array([Tripwire(marker)], dtype=object))
        return path, None
    names = {"pth": "weights.pth", "bin": "pytorch_model.bin", "ckpt": "weights.ckpt", "safetensors": "w.safetensors",
             "hf": "hf/pytorch_model.bin"}
    path = folder / names[kind]
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump({"cls": Tripwire(marker)}, handle)
    if kind == "hf":
        (folder / "hf" / "config.json").write_text(json.dumps({"model_type": "vit"}))
        return folder / "hf", path
    return path, path


@pytest.mark.parametrize("kind, fragment", [
    ("npz", "holds pickled Python objects, which ms_vit refuses"),
    ("pth", "is a PyTorch pickle file, which ms_vit does not open"),
    ("bin", "is a PyTorch pickle file, which ms_vit does not open"),
    ("ckpt", "cannot be read"),
    ("safetensors", "cannot be read as safetensors"),
    ("hf", "has no model.safetensors"),
])
def test_pickled_weights_are_refused_without_being_unpickled(tmp_path, kind, fragment):
    """Not a message matched by a word: a pickle that would create a file when unpickled, in every place weights
    are read from, is refused with the error and the file never appears. The tripwire itself works (last lines)."""
    import pickle

    marker = tmp_path / "unpickled"
    path, raw = write_pickles(kind, tmp_path, marker)
    with pytest.raises(ms_vit.CheckpointError, match=fragment):
        ms_vit.from_pretrained(str(path))
    with pytest.raises(ms_vit.CheckpointError):
        ms_vit.read_checkpoint(str(path))
    assert not marker.exists(), f"{path} was unpickled"
    if raw is None:
        np.load(path, allow_pickle=True)["cls"]
    else:
        with open(raw, "rb") as handle:
            pickle.load(handle)
    assert marker.exists()


def test_mindcv_timm_style_names(tmp_path, images):
    net = source_model(1e-6, "tanh", heads=1)
    path = save_ckpt(to_timm(ours(net), norm=("gamma", "beta")), tmp_path / "mindcv_vit.ckpt")
    check_same_logits(net, path, images, "mindcv")


def test_mindcv_older_names(tmp_path, images):
    """mindcv's older ViT: the tutorial's tree under backbone., its classifier as head.classifier."""
    net = source_model(1e-7, "tanh", heads=1)
    params = {("head.classifier." + k[6:]) if k.startswith("dense.") else "backbone." + k: v
              for k, v in ours(net).items()}
    check_same_logits(net, save_ckpt(params, tmp_path / "vit_b_32_224.ckpt"), images, "tutorial")


def test_the_fixture_weights_tell_the_numerics_apart(images):
    """With the fixtures' weights, a model built with the wrong epsilon or GELU form misses the logits by far more
    than the 2e-5 the format tests allow: those tests would fail on wrong numerics."""
    x = images(2)
    right = logits_of(source_model(1e-6, "erf"), x)
    for eps, gelu in ((1e-7, "erf"), (1e-6, "tanh"), (1e-12, "erf")):
        assert np.abs(logits_of(source_model(eps, gelu), x) - right).max() > 20 * 2e-5, (eps, gelu)


def test_create_model_loads_foreign_formats_with_their_numerics(tmp_path, images):
    """A timm file into a preset (whose numerics are the tutorial's, 1e-7 and tanh) builds timm's 1e-6 and erf."""
    net = source_model(1e-6, "erf")
    path = tmp_path / "w.safetensors"
    save_file(to_timm(ours(net)), str(path))
    other = ms_vit.create_model(TINY, num_heads=4, pretrained=str(path))
    assert (other.config.layer_norm_eps, other.config.gelu) == (1e-6, "erf")
    np.testing.assert_allclose(logits_of(other, images(1)), logits_of(net, images(1)), atol=2e-5)
    assert "timm" in other.numerics_source
    forced = ms_vit.create_model(TINY, num_heads=4, pretrained=str(path), gelu="tanh")  # given: wins
    assert (forced.config.layer_norm_eps, forced.config.gelu) == (1e-6, "tanh")


def test_bad_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ms_vit.CheckpointError, match="cannot be read as safetensors"):
        ms_vit.from_pretrained(str(path))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ms_vit.CheckpointError, match="has no model.safetensors"):
        ms_vit.from_pretrained(str(tmp_path / "hf"))


def test_convert_script_round_trip(tmp_path, images, capsys):
    from ms_vit.cli import run
    from test_scripts import script

    net = source_model(1e-6, "erf")
    path = tmp_path / "w.npz"
    np.savez(path, **to_npz(ours(net)))
    assert run(script("convert"), [str(path), str(tmp_path / "out.ckpt")]) == 0
    assert "npz layout, converted" in capsys.readouterr().out
    converted = ms_vit.from_pretrained(str(tmp_path / "out.ckpt"))
    assert (converted.config.layer_norm_eps, converted.config.gelu, converted.config.num_heads) == (1e-6, "erf", 4)
    meta = converted.load_report.meta  # the npz's own preprocessing, not ImageNet's
    assert (meta["mean"], meta["std"], meta["interpolation"], meta["crop_pct"]) == ([127.5] * 3, [127.5] * 3,
                                                                                      "bilinear", 1.0)
    np.testing.assert_allclose(logits_of(converted, images(2)), logits_of(net, images(2)), atol=2e-5)


def test_parity_with_hf_transformers(tmp_path):
    """ms_vit against transformers' ViTForImageClassification on the same random weights and input."""
    torch = pytest.importorskip("torch", reason="torch is a test-only dependency (pip install -r requirements-dev.txt); "
                                               "CI installs it, so this parity test runs there")
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency "
                                                              "(requirements-dev.txt); CI installs it")
    from ms_vit.models.parity import hf_parity

    result = hf_parity(torch, transformers, str(tmp_path / "hf"), hidden=32, layers=2, heads=4, mlp=64, image=32,
                       patch=8, labels=10)
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["max_abs_logit"])
