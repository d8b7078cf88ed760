"""DINOv2 in ms_vit's ViT: LayerScale, patch 14, registers and the class + mean-patch head input, against transformers'
Dinov2Model / Dinov2WithRegistersModel and their classifiers on tiny random weights, at the source's size and at
another (positions resized the way each source resizes them), from HF folders and from timm's layout."""

import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import tokens_of

import ms_vit

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SOURCE_SIZE = 56  # a 4 x 4 grid of 14-px patches


def hf_config(registers=0, labels=0, **extra):
    kind = transformers.Dinov2WithRegistersConfig if registers else transformers.Dinov2Config
    options = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, image_size=SOURCE_SIZE,
                   patch_size=14, layerscale_value=0.5, **extra)
    if registers:
        options["num_register_tokens"] = registers
    if labels:
        options.update(num_labels=labels, id2label={i: f"class{i}" for i in range(labels)},
                       label2id={f"class{i}": i for i in range(labels)})
    return kind(**options)


def hf_model(registers=0, labels=0, seed=0):
    """A tiny transformers DINOv2 (a classifier when ``labels``) whose weights make every part show in the output:
    LayerScale gammas, norms and positions all drawn at random, not left at their constant initial values."""
    torch.manual_seed(seed)
    config = hf_config(registers, labels)
    if labels:
        cls = (transformers.Dinov2WithRegistersForImageClassification if registers
               else transformers.Dinov2ForImageClassification)
    else:
        cls = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def save_folder(model, folder, preprocessor=True):
    model.save_pretrained(str(folder), safe_serialization=True)
    if preprocessor:
        with open(os.path.join(str(folder), "preprocessor_config.json"), "w") as handle:
            json.dump({"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 64},
                       "resample": 3, "do_center_crop": True, "crop_size": {"height": SOURCE_SIZE, "width": SOURCE_SIZE},
                       "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, handle)
    return str(folder)


def hf_outputs(model, x):
    with torch.no_grad():
        out = model(pixel_values=torch.tensor(x))
    return out.logits.numpy() if hasattr(out, "logits") else out.last_hidden_state.numpy()


def ms_tokens(net, x):
    return tokens_of(net, x)


def assert_close(ours, theirs, rel=1e-5):
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= rel * scale, (np.abs(ours - theirs).max(), scale)


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("size", [SOURCE_SIZE, 84, 28])  # the source's grid, a larger one, a smaller one
def test_features_equal_transformers_last_hidden_state(tmp_path, registers, size):
    """The token sequence (class token, registers, patches) equals transformers' ``last_hidden_state``; away from
    the source's size, transformers interpolates its positions at run time and ms_vit resizes them once at load, in
    the same arithmetic (Dinov2: bicubic; Dinov2WithRegisters: antialiased bicubic)."""
    model = hf_model(registers)
    net = ms_vit.from_pretrained(save_folder(model, tmp_path), image_size=size)
    assert net.config.num_register_tokens == registers and net.config.layer_scale
    assert (net.config.gelu, net.config.layer_norm_eps, net.config.patch_size) == ("erf", 1e-6, 14)
    x = images(size)
    assert_close(ms_tokens(net, x), hf_outputs(model, x))
    if size != SOURCE_SIZE:
        how = net.load_report.resized[0][3]
        assert how == ("antialiased bicubic" if registers else "bicubic")


@pytest.mark.parametrize("registers", [0, 4])
def test_classifier_logits_equal_transformers_on_class_and_mean_patch_token(tmp_path, registers):
    """Dinov2ForImageClassification's head reads the class token and the mean of the patch tokens (registers left
    out): ms_vit's pool "cls_mean" is the same input, and the class names come along."""
    model = hf_model(registers, labels=5)
    net = ms_vit.from_pretrained(save_folder(model, tmp_path))
    assert net.config.pool == "cls_mean" and net.config.num_classes == 5
    assert net.class_names == [f"class{i}" for i in range(5)]
    x = images(SOURCE_SIZE)
    net.set_train(False)
    assert_close(net(ms.Tensor(x)).asnumpy(), hf_outputs(model, x))


def test_hf_dinov2_takes_its_preprocessing_and_runs_at_its_crop(tmp_path):
    model = hf_model()
    folder = save_folder(model, tmp_path)
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    config["image_size"] = 518  # as facebook/dinov2-* say: the pre-training size, not the processor's crop
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    net = ms_vit.from_pretrained(folder)
    assert net.config.image_size == SOURCE_SIZE  # the processor's crop, as transformers' pipeline runs it
    assert net.pretrained_cfg["interpolation"] == "bicubic"
    assert net.pretrained_cfg["crop_pct"] == pytest.approx(SOURCE_SIZE / 64)
    assert net.pretrained_cfg["mean"] == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])


def timm_layout(model):
    """transformers' Dinov2WithRegisters weights in timm's ``vit_*_reg4_dinov2`` layout: fused qkv, ls1/ls2, and
    ``no_embed_class`` (the class token holds its own position; pos_embed covers the patches only)."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    pos = sd["embeddings.position_embeddings"]
    out = {"cls_token": sd["embeddings.cls_token"] + pos[:, :1], "pos_embed": pos[:, 1:],
           "reg_token": sd["embeddings.register_tokens"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(model.config.num_hidden_layers):
        a = f"encoder.layer.{i}."
        b = f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = np.concatenate(
                [sd[a + f"attention.{p}_proj.{kind}"] for p in "qkv"], axis=0)
            out[b + f"attn.proj.{kind}"] = sd[a + f"attention.o_proj.{kind}"]
            for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                out[b + f"{ours}.{kind}"] = sd[a + f"{theirs}.{kind}"]
        out[b + "ls1.gamma"], out[b + "ls2.gamma"] = sd[a + "layer_scale1.lambda1"], sd[a + "layer_scale2.lambda1"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.mark.parametrize("size", [SOURCE_SIZE, 28])
def test_timm_reg4_layout_equals_transformers(tmp_path, size):
    """A timm ``*_reg4_dinov2`` .safetensors: no class position, registers as reg_token; resized with timm's
    antialiased bicubic, which transformers' Dinov2WithRegisters uses at run time too."""
    from safetensors.numpy import save_file

    model = hf_model(registers=4)
    path = str(tmp_path / "vit_small_patch14_reg4_dinov2.safetensors")
    save_file(timm_layout(model), path)
    # A bare .safetensors gives no head count: ms_vit assumes 64 dimensions per head (every DINOv2 size has them).
    net = ms_vit.from_pretrained(path, image_size=size, num_heads=2)
    assert net.load_report.format == "timm_dinov2" and net.config.num_register_tokens == 4
    assert net.pretrained_cfg["interpolation"] == "bicubic" and net.pretrained_cfg["crop_pct"] == 0.875
    x = images(size)
    assert_close(ms_tokens(net, x), hf_outputs(model, x))


def test_models_without_layer_scale_keep_the_tutorials_names():
    names = [p.name for p in ms_vit.create_model("vit_tiny_test").get_parameters()]
    assert names and not any("layer_scale" in n or "register" in n for n in names)
    dino = {p.name for p in ms_vit.create_model("dinov2_s14_reg", num_layers=1).get_parameters()}
    assert {"register_tokens", "transformer.layers.0.0.layer_scale.gamma",
            "transformer.layers.0.1.layer_scale.gamma"} <= dino


def test_presets_build_and_run_in_graph_mode():
    net = ms_vit.create_model("dinov2_s14_reg", num_layers=2, num_classes=3, image_size=28)
    net.set_train(False)
    assert net(ms.Tensor(images(28))).shape == (2, 3)
    tokens = ms_tokens(net, images(28))
    assert tokens.shape == (2, 1 + 4 + 4, 384)


# Bad input: one line naming the file and what was expected.

def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_dinov2_file_missing_a_layer_scale_is_one_line(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = save_folder(hf_model(), tmp_path)
    weights = load_file(os.path.join(folder, "model.safetensors"))
    del weights["encoder.layer.1.layer_scale2.lambda1"]
    save_file(weights, os.path.join(folder, "model.safetensors"))
    with pytest.raises(ms_vit.CheckpointError) as err:
        ms_vit.from_pretrained(folder)
    assert folder in one_line(err) and "transformer.layers.1.1.layer_scale.gamma" in str(err.value)


def test_a_grid_that_is_not_square_is_one_line(tmp_path):
    from safetensors.numpy import save_file

    weights = timm_layout(hf_model(registers=4))
    weights["pos_embed"] = weights["pos_embed"][:, :-2]  # 14 positions
    path = str(tmp_path / "bad.safetensors")
    save_file(weights, path)
    with pytest.raises(ms_vit.CheckpointError) as err:
        ms_vit.from_pretrained(path)
    assert path in one_line(err) and "not a square grid" in str(err.value)


def test_a_register_count_that_disagrees_with_the_weights_is_one_line(tmp_path):
    folder = save_folder(hf_model(registers=4), tmp_path)
    for build in (lambda: ms_vit.from_pretrained(folder, num_register_tokens=2),
                  lambda: ms_vit.create_model(None, pretrained=folder, num_register_tokens=2)):
        with pytest.raises(ms_vit.CheckpointError) as err:
            build()
        assert folder in one_line(err) and "4 register tokens, the model 2" in str(err.value)


def test_a_preset_that_is_not_the_weights_architecture_names_both(tmp_path):
    folder = save_folder(hf_model(registers=4), tmp_path)
    with pytest.raises(ms_vit.CheckpointError) as err:
        ms_vit.create_model("dinov2_s14", pretrained=folder)
    message = one_line(err)
    assert "--model dinov2_s14" in message and folder in message and "embed_dim 384 vs 32" in message


def test_fine_tuning_takes_the_architecture_from_the_weights_and_bad_weights_write_nothing(tmp_path):
    """Without --model a run builds what the weights describe (an HF folder of 2 blocks of width 32 here); with a
    preset that disagrees, or with a damaged DINOv2 file, it stops with one line before the output folder exists."""
    from conftest import make_image_folder
    from safetensors.numpy import load_file, save_file

    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    data = make_image_folder(tmp_path / "data", n_train=2, n_val=1, size=32)
    folder = save_folder(hf_model(), tmp_path / "weights")
    run = {"data_dir": data, "pretrained": folder, "image_size": 28, "batch_size": 3, "epochs": 1, "num_workers": 1,
           "compile_cache": False}
    result = fine_tune(make_train_config({**run, "output_dir": str(tmp_path / "ok")}), log=lambda *a: None)
    config = result.net.config
    assert (config.embed_dim, config.num_layers, config.num_heads, config.pool) == (32, 2, 2, "cls_mean")

    with pytest.raises(ms_vit.CheckpointError) as err:
        fine_tune(make_train_config({**run, "model": "dinov2_s14", "output_dir": str(tmp_path / "preset")}),
                  log=lambda *a: None)
    assert "--model dinov2_s14 is not the architecture of" in one_line(err)
    assert not os.path.exists(tmp_path / "preset")

    weights = load_file(os.path.join(folder, "model.safetensors"))
    del weights["encoder.layer.0.layer_scale1.lambda1"]
    save_file(weights, os.path.join(folder, "model.safetensors"))
    with pytest.raises(ms_vit.CheckpointError) as err:
        fine_tune(make_train_config({**run, "output_dir": str(tmp_path / "damaged")}), log=lambda *a: None)
    assert folder in one_line(err) and not os.path.exists(tmp_path / "damaged")
