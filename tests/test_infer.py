import csv
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from test_evaluate import constant_model
from test_scripts import script

import ms_vit
from ms_vit.cli import run
from ms_vit.evaluate.infer import annotate, attention_rollout, find_images, preprocess, read_rgb


def gradient(w, h):
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 90.0)], axis=2).astype(np.uint8)


def unusual_images(folder):
    """One file per awkward kind of input; returns {name: expected (H, W)}."""
    os.makedirs(folder, exist_ok=True)
    rgb = gradient(60, 40)
    Image.fromarray(rgb[:, :, 0]).save(os.path.join(folder, "gray.png"))
    rgba = np.dstack([rgb, np.full((40, 60), 128, np.uint8)])
    Image.fromarray(rgba).save(os.path.join(folder, "rgba.png"))
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(os.path.join(folder, "palette.png"))
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(os.path.join(folder, "deep16.png"))
    Image.fromarray(rgb).convert("CMYK").save(os.path.join(folder, "cmyk.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(os.path.join(folder, "rotated.jpg"), exif=exif)
    Image.fromarray(gradient(8, 8)).save(os.path.join(folder, "tiny.png"))
    Image.fromarray(gradient(2400, 1600)).save(os.path.join(folder, "large.jpg"), quality=80)
    return {"gray.png": (40, 60), "rgba.png": (40, 60), "palette.png": (40, 60), "deep16.png": (40, 60),
            "cmyk.jpg": (40, 60), "rotated.jpg": (60, 40), "tiny.png": (8, 8), "large.jpg": (1600, 2400)}


def test_every_unusual_mode_becomes_8bit_rgb(tmp_path):
    expected = unusual_images(tmp_path)
    for name, (h, w) in expected.items():
        image = read_rgb(str(tmp_path / name))
        assert image.shape == (h, w, 3) and image.dtype == np.uint8, name
    assert read_rgb(str(tmp_path / "deep16.png")).max() == 255  # 16-bit scaled down, not clipped to white
    assert read_rgb(str(tmp_path / "gray.png"))[0, -1].tolist() == [255, 255, 255]
    rgba = read_rgb(str(tmp_path / "rgba.png"))[0, 0]  # black at 50 % alpha over white
    assert 120 <= rgba[0] <= 135
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg: cannot be read"):
        read_rgb(str(tmp_path / "broken.jpg"))


def test_infer_preprocessing_is_the_eval_pipelines(tmp_path):
    from ms_vit.data import folder as data

    prep = {"image_size": 32, "crop_pct": 0.875, "mean": [120.0, 110.0, 100.0], "std": [60.0, 50.0, 40.0]}
    os.makedirs(tmp_path / "val" / "a")
    Image.fromarray(gradient(70, 50)).save(tmp_path / "val" / "a" / "x.png")
    batch = next(data.eval_dataset(str(tmp_path / "val"), {"a": 0}, 32, 0.875, prep["mean"], prep["std"], 1)
                 .create_tuple_iterator(output_numpy=True))[0][0]
    np.testing.assert_allclose(preprocess(read_rgb(str(tmp_path / "val" / "a" / "x.png")), prep), batch, atol=1e-5)


def test_annotated_image_keeps_its_size_and_changes_where_text_is():
    image = gradient(400, 300)
    out = annotate(image, ["Doberman: 0.91", "237 miniature pinscher: 0.05"])
    assert out.shape == (300, 400, 3)
    original = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert np.abs(out[:20, :60].astype(int) - original[:20, :60]).mean() > 20  # the text band
    np.testing.assert_array_equal(out[150:, 200:], original[150:, 200:])  # the rest untouched
    big = annotate(gradient(3000, 2000), ["Doberman: 0.91"])
    changed_rows = np.where(np.abs(big.astype(int) - cv2.cvtColor(gradient(3000, 2000), cv2.COLOR_RGB2BGR)).sum((1, 2)))[0]
    assert changed_rows.max() > 60  # the font grows with the image
    assert annotate(gradient(8, 8), ["a: 1.00", "b: 0.00"]).shape == (8, 8, 3)


def test_attention_rollout():
    tokens = 5
    identity = np.broadcast_to(np.eye(tokens), (2, 1, 3, tokens, tokens))  # layers, batch, heads
    assert np.allclose(attention_rollout(identity), 0)  # the class token only attends to itself
    focus = np.zeros((2, 1, 3, tokens, tokens))
    focus[..., 3] = 1.0  # everyone attends to token 3 (patch 2)
    relevance = attention_rollout(focus)
    assert relevance.shape == (1, 4) and relevance.argmax() == 2 and relevance.max() == pytest.approx(1.0)


def test_find_images(tmp_path):
    unusual_images(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("x")
    assert len(find_images(str(tmp_path / "in"))) == 8
    assert [os.path.basename(p) for p in find_images(str(tmp_path / "in" / "*.jpg"))] == \
        ["cmyk.jpg", "large.jpg", "rotated.jpg"]
    with pytest.raises(ms_vit.ConfigError, match="does not exist"):
        find_images(str(tmp_path / "nope"))
    with pytest.raises(ms_vit.ConfigError, match="no images in"):
        find_images(str(tmp_path / "in" / "*.gif"))


def test_infer_script_end_to_end(tmp_path, capsys):
    ckpt = constant_model(tmp_path / "vit_b_16_224.ckpt", 1000, bias_order=[236, 237, 3, 4, 5])
    sizes = unusual_images(tmp_path / "in")
    (tmp_path / "in" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    assert run(script("infer"), ["--ckpt", ckpt, "--input", str(tmp_path / "in"), "--output", str(out),
                                 "--topk", "3", "--attention"]) == 0
    printed = capsys.readouterr().out
    assert "{236: 'Doberman'}" in printed and "8 images annotated" in printed and "1 skipped" in printed
    report = json.loads((out / "predictions.json").read_text())
    assert report["topk"] == 3 and len(report["predictions"]) == 8
    assert report["skipped"][0]["file"].endswith("corrupt.jpg")
    first = report["predictions"][0]
    assert set(first) == {"file", "annotated", "top"} and len(first["top"]) == 3
    assert first["top"][0] == {"index": 236, "label": "Doberman", "probability": pytest.approx(first["top"][0]["probability"])}
    assert [t["index"] for t in first["top"]] == [236, 237, 3]
    for record in report["predictions"]:
        annotated = cv2.imread(record["annotated"])
        assert annotated.shape[:2] == sizes[os.path.basename(record["file"])]
    rows = list(csv.reader(open(out / "predictions.csv")))
    assert rows[0][:5] == ["file", "annotated", "index_1", "label_1", "prob_1"] and len(rows) == 9


def test_infer_fails_only_when_nothing_can_be_read(tmp_path, capsys):
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[0], class_names=["a", "b", "c"])
    os.makedirs(tmp_path / "in")
    (tmp_path / "in" / "a.jpg").write_bytes(b"")
    (tmp_path / "in" / "b.png").write_bytes(b"PNG?")
    assert run(script("infer"), ["--ckpt", ckpt, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]) == 1
    captured = capsys.readouterr()
    assert "0 images annotated" in captured.out and "2 skipped" in captured.out
    assert "error: none of the 2 input files could be read" in captured.err


def test_labels_from_meta_mat_in_infer(tmp_path, capsys):
    from test_labels import write_meta_mat

    ckpt = constant_model(tmp_path / "m.ckpt", 1000, bias_order=[236])
    Image.fromarray(gradient(64, 64)).save(tmp_path / "dog.png")
    assert run(script("infer"), ["--ckpt", ckpt, "--input", str(tmp_path / "dog.png"), "--output", str(tmp_path / "o"),
                                 "--meta_mat", write_meta_mat(tmp_path / "meta.mat")]) == 0
    printed = capsys.readouterr().out
    assert "{236: 'Doberman'}" in printed
    probability = float(printed.split("{236: 'Doberman'}")[1].split()[0])  # the top-1 probability beside the class
    assert 0 < probability <= 1
