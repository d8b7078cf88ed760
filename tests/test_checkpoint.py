import os
import stat

import mindspore as ms
import numpy as np
import pytest
from conftest import FIXTURES, TINY, logits_of

import ms_vit
from ms_vit.checkpoint.adapt import resize_pos_embed


def save_named(path, params):
    """Write {name: array} exactly as ms.save_checkpoint does for a network."""
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(path))
    return str(path)


def weights(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def test_save_then_load_gives_identical_logits_and_metadata(tiny_net, images, tmp_path):
    meta = {"model": tiny_net.config.to_dict(), "model_name": TINY, "class_names": [f"c{i}" for i in range(10)]}
    path = ms_vit.save_checkpoint(tiny_net, tmp_path / "m.ckpt", meta=meta, extra={"epoch": 3})
    ms.set_seed(99)
    other = ms_vit.create_model(TINY)
    report = ms_vit.load_checkpoint(other, path)
    x = images(2)
    np.testing.assert_array_equal(logits_of(other, x), logits_of(tiny_net, x))
    assert report.meta == meta and not report.head_reset and report.ignored == ["epoch"]
    rebuilt = ms_vit.from_pretrained(path)
    assert rebuilt.config == tiny_net.config and rebuilt.class_names == meta["class_names"]
    np.testing.assert_array_equal(logits_of(rebuilt, x), logits_of(tiny_net, x))
    assert ms_vit.read_checkpoint(path).params["epoch"] == 3


def test_save_is_atomic_and_replaces_an_existing_file(tiny_net, tmp_path, monkeypatch):
    path = tmp_path / "m.ckpt"
    ms_vit.save_checkpoint(tiny_net, path)
    os.chmod(path, stat.S_IRUSR)  # MindSpore leaves checkpoints read-only; saving again must still work
    before = path.read_bytes()

    def crash(*args, **kwargs):
        with open(args[1], "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ms, "save_checkpoint", crash)
    with pytest.raises(OSError):
        ms_vit.save_checkpoint(tiny_net, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.ckpt"]  # no temporary file left behind
    monkeypatch.undo()
    ms_vit.save_checkpoint(tiny_net, path, meta={"x": 1})
    assert ms_vit.read_checkpoint(path).meta == {"x": 1}


def test_checkpoint_written_by_model_training_loads_and_optimizer_state_is_ignored(tmp_path):
    from mindspore import dataset as ds
    from mindspore import nn
    from mindspore.train import CheckpointConfig, Model, ModelCheckpoint

    ms.set_seed(4)
    net = ms_vit.create_model(TINY)
    rng = np.random.default_rng(0)
    data = ds.NumpySlicesDataset({"image": rng.standard_normal((4, 3, 32, 32)).astype(np.float32),
                                  "label": rng.integers(0, 10, 4).astype(np.int32)}, shuffle=False).batch(2)
    opt = nn.Adam(net.trainable_params(), learning_rate=1e-3)
    ckpt_cb = ModelCheckpoint(prefix="vit", directory=str(tmp_path), config=CheckpointConfig(save_checkpoint_steps=2))
    Model(net, loss_fn=ms_vit.CrossEntropySmooth(num_classes=10), optimizer=opt).train(
        1, data, callbacks=[ckpt_cb], dataset_sink_mode=False)
    path = ckpt_cb.latest_ckpt_file_name
    report = ms_vit.load_checkpoint(ms_vit.create_model(TINY), path)
    assert len(report.loaded) == len(list(net.get_parameters()))
    assert any(name.startswith("moment1.") for name in report.ignored)
    assert {"beta1_power", "beta2_power", "learning_rate", "global_step"} <= set(report.ignored)
    assert "optimizer state" in str(report)


@pytest.mark.parametrize("prefix", ["network.", "backbone.", "_backbone."])
def test_wrapper_prefixes_are_removed(tiny_net, images, tmp_path, prefix):
    path = save_named(tmp_path / "p.ckpt", {prefix + k: v for k, v in weights(tiny_net).items()})
    net = ms_vit.create_model(TINY)
    report = ms_vit.load_checkpoint(net, path)
    assert report.prefix == prefix
    x = images(1)
    np.testing.assert_array_equal(logits_of(net, x), logits_of(tiny_net, x))


def test_other_class_count_reinitialises_the_head(tiny_net, tmp_path):
    path = ms_vit.save_checkpoint(tiny_net, tmp_path / "m.ckpt")
    net = ms_vit.create_model(TINY, num_classes=5, pretrained=path)
    assert net.load_report.head_reset == ["dense.weight", "dense.bias"]
    assert "re-initialised the classifier" in str(net.load_report)
    assert np.all(net.dense.bias.asnumpy() == 0) and 0 < net.dense.weight.asnumpy().std() < 0.05
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), tiny_net.norm.gamma.asnumpy())
    with pytest.raises(ms_vit.CheckpointError, match="dense.weight has shape"):
        ms_vit.create_model(TINY, num_classes=5, pretrained=path, strict_head=True)


def test_other_image_size_resizes_the_position_embedding(tiny_net, tmp_path):
    path = ms_vit.save_checkpoint(tiny_net, tmp_path / "m.ckpt")
    net = ms_vit.create_model(TINY, image_size=64, pretrained=path)
    assert net.load_report.resized == [("pos_embedding", (1, 17, 32), (1, 65, 32), "bicubic")]
    old, new = tiny_net.pos_embedding.asnumpy(), net.pos_embedding.asnumpy()
    np.testing.assert_array_equal(new[:, 0], old[:, 0])  # class token's position kept
    assert new.shape == (1, 65, 32) and np.isfinite(new).all()
    assert net(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32))).shape == (1, 10)


def cubic_resize_1d(values, new_len, a=-0.75):
    """Keys' cubic convolution, half-pixel centres, edges clamped: torch's bicubic with align_corners=False."""
    def weight(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a if t < 2 else 0.0
    n = values.shape[0]
    out = np.zeros((new_len,) + values.shape[1:])
    for i in range(new_len):
        src = (i + 0.5) * n / new_len - 0.5
        base = int(np.floor(src))
        for k in range(base - 1, base + 3):
            out[i] += weight(src - k) * values[min(max(k, 0), n - 1)]
    return out


def test_pos_embed_resize_is_bicubic_and_identity_at_the_same_size():
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1, 1 + 14 * 14, 768)).astype(np.float32)
    assert resize_pos_embed(pos, (14, 14)) is pos
    small = rng.standard_normal((1, 1 + 4 * 4, 3)).astype(np.float32)
    grid = small[0, 1:].reshape(4, 4, 3).astype(np.float64)
    expected = cubic_resize_1d(cubic_resize_1d(grid, 6).transpose(1, 0, 2), 6).transpose(1, 0, 2)
    out = resize_pos_embed(small, (6, 6))
    np.testing.assert_array_equal(out[:, 0], small[:, 0])
    np.testing.assert_allclose(out[0, 1:].reshape(6, 6, 3), expected, atol=2e-3)  # OpenCV's fixed-point weights
    assert resize_pos_embed(pos, (24, 24)).shape == (1, 577, 768)  # more than OpenCV's 512 channels at once


def test_missing_parameter_is_an_error_naming_it(tiny_net, tmp_path):
    params = weights(tiny_net)
    del params["transformer.layers.1.1.cell.1.dense2.bias"]
    path = save_named(tmp_path / "m.ckpt", params)
    with pytest.raises(ms_vit.CheckpointError, match="transformer.layers.1.1.cell.1.dense2.bias"):
        ms_vit.load_checkpoint(ms_vit.create_model(TINY), path)


def test_misshaped_parameter_is_an_error_naming_it(tiny_net, tmp_path):
    params = weights(tiny_net)
    params["transformer.layers.0.1.cell.1.dense1.weight"] = np.zeros((65, 32), np.float32)
    path = save_named(tmp_path / "m.ckpt", params)
    with pytest.raises(ms_vit.CheckpointError, match=r"dense1.weight has shape \(65, 32\), the model expects"):
        ms_vit.load_checkpoint(ms_vit.create_model(TINY), path)


def test_extra_entries_are_ignored_and_reported(tiny_net, tmp_path):
    params = weights(tiny_net)
    params["ema.something"] = np.zeros(3, np.float32)
    report = ms_vit.load_checkpoint(ms_vit.create_model(TINY), save_named(tmp_path / "m.ckpt", params))
    assert report.ignored == ["ema.something"]


def _bad_files(tmp_path):
    good = ms_vit.save_checkpoint(ms_vit.create_model(TINY), tmp_path / "good.ckpt")
    data = open(good, "rb").read()
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.ckpt").write_text("<html>404 Not Found</html>")
    (tmp_path / "folder.ckpt").mkdir()
    (tmp_path / "weights.pth").write_bytes(data)
    (tmp_path / "weights.h5").write_bytes(data)
    from mindspore import nn
    ms.save_checkpoint(nn.Dense(4, 2), str(tmp_path / "foreign.ckpt"))


@pytest.mark.parametrize("name, fragment", [
    ("missing.ckpt", "does not exist"),
    ("empty.ckpt", "is empty (0 bytes)"),
    ("truncated.ckpt", "cannot be read"),
    ("text.ckpt", "cannot be read"),
    ("folder.ckpt", "is a folder"),
    ("weights.pth", "is a PyTorch pickle file, which ms_vit does not open"),
    ("weights.h5", "has an unknown type: ms_vit reads .ckpt, .safetensors, .npz"),
    ("foreign.ckpt", "lacks 32 of the model's 32 parameters"),
])
def test_bad_checkpoint_files_give_one_line_naming_the_file(tmp_path, name, fragment):
    _bad_files(tmp_path)
    path = str(tmp_path / name)
    net = ms_vit.create_model(TINY)
    before = net.norm.gamma.asnumpy().copy()
    with pytest.raises(ms_vit.CheckpointError) as err:
        ms_vit.load_checkpoint(net, path)
    message = str(err.value)
    assert fragment in message and path in message and "\n" not in message
    np.testing.assert_array_equal(net.norm.gamma.asnumpy(), before)  # never a half-loaded model


def test_tutorial_checkpoint_architecture_is_read_from_its_shapes():
    net = ms_vit.from_pretrained(os.path.join(FIXTURES, "tutorial_tiny.ckpt"))
    cfg = net.config
    assert (cfg.image_size, cfg.patch_size, cfg.embed_dim, cfg.num_layers, cfg.mlp_dim, cfg.num_classes) == \
        (32, 8, 32, 2, 64, 10)


def test_vit_b_16_tutorial_format_round_trip(tmp_path, images, vit_b):
    """One ViT-B/16 load: a checkpoint in the tutorial's format (as ms.save_checkpoint(ViT()) writes it)."""
    net = vit_b
    path = str(tmp_path / "vit_b_16_224.ckpt")
    ms.save_checkpoint(net, path)
    loaded = ms_vit.from_pretrained(path)
    assert loaded.config.num_heads == 12 and loaded.config.num_parameters == 86_567_656
    for name in ("cls", "pos_embedding", "dense.weight", "transformer.layers.11.1.cell.1.dense2.weight"):
        np.testing.assert_array_equal(dict((p.name, p) for p in loaded.get_parameters())[name].asnumpy(),
                                      dict((p.name, p) for p in net.get_parameters())[name].asnumpy())
