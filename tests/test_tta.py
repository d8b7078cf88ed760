"""Test-time augmentation: the views each mode averages, checked against the network run on each view alone."""

import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import logits_of, make_image_folder
from PIL import Image
from test_scripts import script

import ms_vit
from ms_vit.cli import run
from ms_vit.evaluate import tta
from ms_vit.evaluate.run import evaluate, folder_logits, load_for_inference

NAMES = ["blue", "green", "red"]


def random_model(path, crop_pct=0.875):
    """A tiny ViT with random weights (its logits depend on the image, so a mirror or a crop changes them)."""
    ms.set_seed(0)
    net = ms_vit.create_model("vit_tiny_test", num_classes=3)
    return ms_vit.save_checkpoint(net, path, meta={"model": net.config.to_dict(), "class_names": NAMES,
                                                   "crop_pct": crop_pct})


@pytest.fixture
def net(tmp_path):
    return load_for_inference(random_model(tmp_path / "m.ckpt"))


def test_flip_of_a_mirror_symmetric_input_is_the_plain_logits(net, images):
    x = images(3)
    symmetric = (x + x[..., ::-1]) / 2
    np.testing.assert_allclose(tta.net_logits(net, symmetric, "flip"), tta.net_logits(net, symmetric, "none"),
                               rtol=0, atol=1e-6)


def test_flip_is_the_mean_of_the_net_on_the_image_and_its_mirror(net, images):
    x = images(3, seed=1)
    plain, mirrored = logits_of(net, x), logits_of(net, np.ascontiguousarray(x[..., ::-1]))
    flipped = tta.net_logits(net, x, "flip")
    np.testing.assert_allclose(flipped, (plain.astype(np.float64) + mirrored) / 2, rtol=0, atol=1e-6)
    assert np.abs(flipped - plain).max() > 1e-3  # the mirror does change them: the test above is not vacuous
    np.testing.assert_allclose(tta.net_logits(net, x, "none"), plain, rtol=0, atol=1e-6)


def test_crops_are_the_centre_and_four_corners_of_the_documented_square(net, images):
    assert tta.crops_side(224, 0.875) == 256 and tta.crops_side(224, 224 / 256) == 256
    assert tta.crops_side(224, 0.8) == 280  # a smaller crop_pct: the standard resize, larger
    assert tta.crops_side(224, 0.9) == tta.crops_side(224, 1.0) == 256  # capped, so the corners differ
    assert tta.crop_offsets(37, 32) == [(2, 2), (0, 0), (0, 5), (5, 0), (5, 5)]
    side = tta.crops_side(32, 0.875)
    assert side == 37
    x = images(2, size=side, seed=2)
    crops = [x[..., 2:34, 2:34], x[..., :32, :32], x[..., :32, 5:], x[..., 5:, :32], x[..., 5:, 5:]]
    expected = np.mean([logits_of(net, np.ascontiguousarray(c)).astype(np.float64) for c in crops], axis=0)
    np.testing.assert_allclose(tta.net_logits(net, x, "crops", 32), expected, rtol=0, atol=1e-6)
    assert [v.shape for v in tta.views(x, "crops", 32)] == [(2, 3, 32, 32)] * 5


def test_the_centre_crop_is_the_standard_eval_view(tmp_path):
    """crops reads a square of the standard resize (crop_pct <= 0.875): its centre crop is what --tta none sees,
    also for an odd margin and a non-square image."""
    from ms_vit.data import folder as data
    from ms_vit.evaluate.infer import preprocess, read_rgb

    os.makedirs(tmp_path / "a")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 71, 3), dtype=np.uint8)).save(tmp_path / "a" / "x.png")
    for size, crop_pct in ((32, 0.875), (31, 0.8), (30, 0.875), (33, 0.875)):  # margins 5, 8, 4, 5 (odd, even)
        prep = {"image_size": size, "crop_pct": crop_pct, "mean": [120.0] * 3, "std": [60.0] * 3}
        read = tta.input_preprocess(prep, "crops")
        assert read["square"] == round(size / crop_pct) and read["image_size"] == size

        def batch(p):
            return next(data.eval_dataset(str(tmp_path), {"a": 0}, p["image_size"], p["crop_pct"], p["mean"],
                                          p["std"], 1, square=p.get("square"))
                        .create_tuple_iterator(output_numpy=True))[0]

        squares = batch(read)
        assert squares.shape[-2:] == (read["square"],) * 2
        np.testing.assert_array_equal(tta.views(squares, "crops", size)[0], batch(prep))
        single = preprocess(read_rgb(str(tmp_path / "a" / "x.png")), read)  # infer's path: the same square
        np.testing.assert_allclose(single, squares[0], rtol=0, atol=1e-5)
    assert tta.input_preprocess(prep, "flip") is prep


def test_evaluate_averages_the_views_of_the_pipeline_images(net, tmp_path):
    from ms_vit.data import folder as data

    make_image_folder(tmp_path / "data", n_train=1, n_val=3)
    val = str(tmp_path / "data" / "val")
    found = folder_logits(net, val, batch_size=9, tta="flip")  # one batch: one graph for every call below
    indexing = {n: i for i, n in enumerate(NAMES)}
    p = net.preprocess
    x = np.concatenate([b[0] for b in data.eval_dataset(val, indexing, p["image_size"], p["crop_pct"], p["mean"],
                                                           p["std"], 9).create_tuple_iterator(output_numpy=True)])
    expected = (logits_of(net, x).astype(np.float64) + logits_of(net, np.ascontiguousarray(x[..., ::-1]))) / 2
    np.testing.assert_allclose(found["logits"], expected, rtol=0, atol=1e-6)
    report = evaluate(net, val, batch_size=9, tta="crops", log=lambda *a: None)
    assert report["tta"] == "crops" and report["num_images"] == 9


def test_eval_script_reports_the_tta_and_rejects_an_unknown_one(tmp_path, capsys):
    make_image_folder(tmp_path / "data", n_train=1, n_val=2)
    ckpt = random_model(tmp_path / "m.ckpt")
    out = tmp_path / "r" / "report.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data" / "val"), "--json", str(out),
                                "--tta", "flip"]) == 0
    assert "tta: flip (mean logits of the image and its mirror)" in capsys.readouterr().out
    assert json.loads(out.read_text())["tta"] == "flip"
    for name in ("eval", "infer", "calibrate"):
        argv = ["--ckpt", ckpt, "--tta", "mirror"] + (["--input", "x.png"] if name == "infer" else ["--data_dir", "d"])
        assert run(script(name), argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--tta" in err and "'none', 'flip', 'crops'" in err and "mirror" in err
    with pytest.raises(ms_vit.ConfigError, match="--tta 'mirror' .* use one of none, flip, crops"):
        tta.check_mode("mirror")


def test_infer_with_tta_averages_the_views_of_each_image(tmp_path):
    from ms_vit.evaluate.infer import predict_files, preprocess, read_rgb, softmax

    net = load_for_inference(random_model(tmp_path / "m.ckpt"))
    make_image_folder(tmp_path / "data", n_train=2, n_val=1)
    paths = sorted(str(tmp_path / "data" / "train" / n / f) for n in NAMES for f in ("0.jpg", "1.jpg"))
    result = predict_files(net, paths, NAMES, str(tmp_path / "out"), topk=3, batch_size=6, tta="flip",
                           log=lambda *a: None)
    x = np.stack([preprocess(read_rgb(p), net.preprocess) for p in paths])
    expected = softmax((logits_of(net, x).astype(np.float64) + logits_of(net, np.ascontiguousarray(x[..., ::-1]))) / 2)
    for record, probs in zip(result["records"], expected):
        assert [t["probability"] for t in record["top"]] == pytest.approx(sorted(probs, reverse=True), abs=1e-6)
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert saved["tta"] == "flip" and saved["temperature"] == 1.0


def test_infer_crops_with_attention_draws_the_plain_views_map(tmp_path):
    from ms_vit.evaluate.infer import predict_files

    net = load_for_inference(random_model(tmp_path / "m.ckpt"))
    make_image_folder(tmp_path / "data", classes=("blue",), n_train=1, n_val=1)
    path = str(tmp_path / "data" / "train" / "blue" / "0.jpg")
    plain = predict_files(net, [path], NAMES, str(tmp_path / "a"), log=lambda *a: None)
    crops = predict_files(net, [path], NAMES, str(tmp_path / "b"), attention=True, tta="crops", log=lambda *a: None)
    assert len(crops["records"]) == 1
    assert crops["records"][0]["top"][0]["probability"] != pytest.approx(plain["records"][0]["top"][0]["probability"],
                                                                         abs=1e-7)
