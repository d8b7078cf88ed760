"""Foreign weights keep their preprocessing (mean/std, interpolation, crop_pct) and numerics (GELU form, LayerNorm
epsilon) through fine-tuning, the saved checkpoint and inference; what the run sets wins."""

import json

import mindspore as ms
import numpy as np
import pytest
import yaml
from conftest import TINY, TINY_RUN, command_line, make_image_folder
from safetensors.numpy import save_file
from test_formats import ours, to_hf, to_npz, to_timm

import ms_vit
from ms_vit.checkpoint.pretrained_cfg import resolve_preprocess, source_preprocess
from ms_vit.config import IMAGENET_MEAN, IMAGENET_STD, make_train_config
from ms_vit.evaluate.run import load_for_inference
from ms_vit.config.document import parse_config
from ms_vit.train.run import fine_tune

HALF = [127.5] * 3
HF_CONFIG = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 32, "patch_size": 8,
             "num_channels": 3}
# DeiT's processor: ImageNet statistics, PIL bicubic, resize 256 then centre-crop 224 (crop_pct 0.875): not what a
# bare HF file gets (0.5/0.5, bilinear, 1.0), so the run can only have these values from the file.
DEIT_PREPROCESSOR = {"image_processor_type": "DeiTImageProcessor", "image_mean": [0.485, 0.456, 0.406],
                     "image_std": [0.229, 0.224, 0.225], "resample": 3, "do_center_crop": True,
                     "size": {"height": 256, "width": 256}, "crop_size": {"height": 224, "width": 224}}


def source_weights(eps, gelu):
    ms.set_seed(1)
    return ours(ms_vit.create_model(TINY, layer_norm_eps=eps, gelu=gelu))


def write_source(kind: str, folder) -> str:
    """A tiny pretrained file of one source, in its own layout, built with that source's numerics."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "timm":
        path = folder / "vit_tiny.safetensors"
        save_file(to_timm(source_weights(1e-6, "erf")), str(path))
    elif kind == "hf":
        path = folder / "hf_vit"
        path.mkdir()
        save_file(to_hf(source_weights(1e-12, "erf")), str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(HF_CONFIG))
        (path / "preprocessor_config.json").write_text(json.dumps(DEIT_PREPROCESSOR))
    elif kind == "npz":
        path = folder / "ViT-tiny.npz"
        np.savez(path, **to_npz(source_weights(1e-6, "erf")))
    else:  # the tutorial's .ckpt: ms.save_checkpoint of its network, no metadata
        path = folder / "vit_tutorial.ckpt"
        params = source_weights(1e-7, "tanh")
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(path))
    return str(path)


# source -> (LayerNorm eps, GELU form, mean, std, interpolation, crop_pct, a word of the log line's "from ...")
EXPECTED = {
    "timm": (1e-6, "erf", HALF, HALF, "bicubic", 0.9, "timm"),
    "hf": (1e-12, "erf", [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255],
           "bicubic", 0.875, "preprocessor_config.json"),
    "npz": (1e-6, "erf", HALF, HALF, "bilinear", 1.0, "Google"),
    "tutorial": (1e-7, "tanh", IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875, "tutorial"),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One image folder and one file per source, for every run of this module."""
    root = tmp_path_factory.mktemp("pretrained_cfg")
    make_image_folder(root / "data", n_train=4, n_val=4, size=36)  # 12 val images: whole batches, one eval graph
    return root, {kind: write_source(kind, root / "weights" / kind) for kind in EXPECTED}


def tune(root, out, argv=(), **values):
    """fine_tune of the tiny recipe for one epoch, from its command line; returns (result, log lines). In PYNATIVE
    mode: what these runs check (the network's numerics, the log, config.yaml, best.ckpt's metadata, inference
    from it) does not depend on the mode, and a run takes 2-3 s without its graph compiles instead of 6-7 s."""
    base = {**TINY_RUN, "epochs": 1, "mode": "pynative", "data_dir": str(root / "data"), "output_dir": str(root / out),
            **values}
    cfg = parse_config(command_line(base) + list(argv))
    lines = []
    return fine_tune(cfg, log=lines.append), lines


def line(lines, start):
    found = [x for x in lines if x.startswith(start)]
    assert len(found) == 1, lines
    return found[0]


def close(a, b):
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-4)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_fine_tune_keeps_the_sources_numerics_and_preprocessing(shared, kind):
    """Task A and B per source: the net, the log, config.yaml, best.ckpt's metadata and inference from it."""
    root, files = shared
    eps, gelu, mean, std, interpolation, crop_pct, word = EXPECTED[kind]
    result, lines = tune(root, f"out_{kind}", pretrained=files[kind])
    assert (result.net.config.layer_norm_eps, result.net.config.gelu) == (eps, gelu)
    numerics = line(lines, "numerics: ")
    assert f"{gelu} GELU" in numerics and files[kind] in numerics
    prep_line = line(lines, "preprocessing: ")
    assert f"{interpolation}, crop_pct {crop_pct:g}" in prep_line and word in prep_line and files[kind] in prep_line
    saved = yaml.safe_load((root / f"out_{kind}" / "config.yaml").read_text())
    meta = ms_vit.read_checkpoint(str(root / f"out_{kind}" / "best.ckpt")).meta
    for where in (saved, meta):
        assert close(where["mean"], mean) and close(where["std"], std), where
        assert (where["interpolation"], where["crop_pct"]) == (interpolation, pytest.approx(crop_pct))
    assert (meta["model"]["layer_norm_eps"], meta["model"]["gelu"]) == (eps, gelu)
    net = load_for_inference(str(root / f"out_{kind}" / "best.ckpt"))
    assert close(net.preprocess["mean"], mean) and close(net.preprocess["std"], std)
    assert (net.preprocess["interpolation"], net.preprocess["crop_pct"]) == (interpolation, pytest.approx(crop_pct))
    assert (net.config.layer_norm_eps, net.config.gelu) == (eps, gelu)


def test_what_the_run_sets_wins(shared):
    """--mean/--std and --gelu/--layer_norm_eps on the command line beat the weights' (timm: 0.5/0.5, erf, 1e-6);
    the keys the run leaves unset still follow the weights."""
    root, files = shared
    result, lines = tune(root, "out_override", ["--mean", "100", "110", "120", "--std", "50", "60", "70", "--gelu",
                                                "tanh", "--layer_norm_eps", "1e-5"], pretrained=files["timm"])
    assert (result.net.config.layer_norm_eps, result.net.config.gelu) == (1e-5, "tanh")
    meta = ms_vit.read_checkpoint(str(root / "out_override" / "best.ckpt")).meta
    assert (meta["mean"], meta["std"]) == ([100.0, 110.0, 120.0], [50.0, 60.0, 70.0])
    assert (meta["interpolation"], meta["crop_pct"]) == ("bicubic", 0.9)  # not set: timm's
    prep_line = line(lines, "preprocessing: ")
    assert "mean, std set by the run's configuration; interpolation, crop_pct from timm's" in prep_line
    assert "layer_norm_eps, gelu given" in line(lines, "numerics: ")
    net = load_for_inference(str(root / "out_override" / "best.ckpt"))
    assert net.preprocess["mean"] == [100.0, 110.0, 120.0] and net.config.gelu == "tanh"


def test_without_pretrained_weights_the_defaults_are_the_tutorials(tiny_run):
    """The shared tiny run: no pretrained weights."""
    result, lines = tiny_run.result, tiny_run.lines
    assert (result.net.config.layer_norm_eps, result.net.config.gelu) == (1e-7, "tanh")
    meta = ms_vit.read_checkpoint(str(tiny_run.output_dir / "best.ckpt")).meta
    assert (meta["mean"], meta["std"], meta["interpolation"], meta["crop_pct"]) == \
        (IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875)
    assert "ImageNet's, the default without pretrained weights" in line(lines, "preprocessing: ")


def test_inference_on_a_foreign_file_uses_its_sources_preprocessing(shared):
    """eval.py/infer.py on the npz itself: Google's [-1, 1] scaling, not ImageNet's."""
    _, files = shared
    net = load_for_inference(files["npz"])
    assert (net.preprocess["mean"], net.preprocess["std"], net.preprocess["interpolation"],
            net.preprocess["crop_pct"]) == (HALF, HALF, "bilinear", 1.0)
    assert files["npz"] in net.preprocess_source


def test_infer_resizes_with_the_checkpoints_interpolation():
    from ms_vit.evaluate.infer import preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    prep = {"image_size": 32, "crop_pct": 0.875, "mean": HALF, "std": HALF}
    bilinear = preprocess(rgb, {**prep, "interpolation": "bilinear"})
    bicubic = preprocess(rgb, {**prep, "interpolation": "bicubic"})
    assert bilinear.shape == bicubic.shape == (3, 32, 32) and np.abs(bilinear - bicubic).max() > 0.05


def test_hf_preprocessor_config_variants(tmp_path):
    """google/vit-*'s file (resized straight to the input: crop_pct 1.0), a file's own crop_pct, none at all, and a
    resampling mode ms_vit does not resize with (one error line naming the file and the fix)."""
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(to_hf(source_weights(1e-12, "erf")), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    assert source_preprocess(ms_vit.read_checkpoint(str(folder)))[0] == \
        {"mean": HALF, "std": HALF, "interpolation": "bilinear", "crop_pct": 1.0}  # ViTImageProcessor's defaults
    pp = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}
    for extra, crop_pct in (({}, 1.0), ({"crop_pct": 0.95}, 0.95)):
        (folder / "preprocessor_config.json").write_text(json.dumps({**pp, **extra}))
        prep, where = source_preprocess(ms_vit.read_checkpoint(str(folder)))
        assert prep["crop_pct"] == crop_pct and where == f"{folder}/preprocessor_config.json"
    (folder / "preprocessor_config.json").write_text(json.dumps({**pp, "resample": 0}))
    source = source_preprocess(ms_vit.read_checkpoint(str(folder)))
    with pytest.raises(ms_vit.CheckpointError, match=r"preprocessor_config.json: interpolation 'nearest' is not one "
                                                     r"ms_vit resizes with .*--interpolation"):
        resolve_preprocess({}, source)
    assert resolve_preprocess({"interpolation": "bicubic"}, source)[0]["interpolation"] == "bicubic"


def test_timm_hub_folder_with_pretrained_cfg(tmp_path, images):
    """timm's hub upload: model.safetensors beside a config.json holding pretrained_cfg (not HF's fields)."""
    folder = tmp_path / "timm_hub"
    folder.mkdir()
    save_file(to_timm(source_weights(1e-6, "erf")), str(folder / "model.safetensors"))
    cfg = {"architecture": "vit_tiny_patch16_224", "num_classes": 10,
           "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                              "interpolation": "bicubic", "crop_pct": 0.875}}
    (folder / "config.json").write_text(json.dumps(cfg))
    net = ms_vit.from_pretrained(str(folder))
    assert (net.config.layer_norm_eps, net.config.gelu) == (1e-6, "erf")
    assert close(net.pretrained_cfg["mean"], IMAGENET_MEAN) and net.pretrained_cfg["crop_pct"] == 0.875
    assert net.pretrained_cfg_source == f"{folder}/config.json pretrained_cfg"


@pytest.mark.parametrize("values, fragment", [
    ({"interpolation": "nearest"}, "interpolation must be one of bilinear, bicubic"),
    ({"gelu": "relu"}, "gelu must be one of tanh, erf"),
    ({"mean": [1, 2]}, "mean and std need 3 values each"),
    ({"crop_pct": -1}, "crop_pct must not be negative"),
])
def test_bad_preprocessing_options(values, fragment):
    with pytest.raises(ms_vit.ConfigError, match=fragment):
        make_train_config(values)
