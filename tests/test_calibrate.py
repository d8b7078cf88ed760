"""Temperature scaling: the fit recovers a known temperature, the stored one round-trips through the checkpoint and
changes infer's probabilities and eval's ECE, bad held-out folders are one line."""

import json
import os

import numpy as np
import pytest
from conftest import make_image_folder
from scipy.special import softmax
from test_scripts import script
from test_tta import NAMES, random_model

import ms_vit
from ms_vit.cli import run
from ms_vit.evaluate import metrics
from ms_vit.evaluate.calibrate import fit_temperature, mean_nll, stored_temperature, write_temperature
from ms_vit.evaluate.run import load_for_inference


def sampled(temperature, n=6000, classes=5, seed=0):
    """Logits z * temperature whose labels are drawn from softmax(z): calibrated at exactly ``temperature``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, classes)) * 2
    p = softmax(z, axis=1)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return z * temperature, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_the_fit_recovers_a_known_temperature(temperature):
    logits, labels = sampled(temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.06)
    best = mean_nll(logits, labels, fitted)
    assert best <= mean_nll(logits, labels, fitted * 1.02) and best <= mean_nll(logits, labels, fitted / 1.02)
    if temperature != 1.0:  # and it calibrates: ECE falls
        assert metrics.expected_calibration_error(logits / fitted, labels) < \
            metrics.expected_calibration_error(logits, labels)


def test_the_temperature_round_trips_and_keeps_everything_else(tmp_path):
    ckpt = random_model(tmp_path / "m.ckpt")
    before = ms_vit.read_checkpoint(ckpt)
    copy = write_temperature(ckpt, 2.5, str(tmp_path / "copy.ckpt"), record={"images": 9})
    assert "temperature" not in ms_vit.read_checkpoint(ckpt).meta  # --output leaves the source as it was
    for path in (copy, write_temperature(ckpt, 2.5)):  # in place
        after = ms_vit.read_checkpoint(path)
        assert after.meta == {**before.meta, "temperature": 2.5, **({"calibration": {"images": 9}}
                                                                     if path == copy else {})}
        assert after.meta["class_names"] == NAMES
        assert set(after.params) == set(before.params)
        for name, value in before.params.items():
            np.testing.assert_array_equal(after.params[name], value)
        net = load_for_inference(path)
        assert net.temperature == 2.5 and net.class_names == NAMES
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]  # the atomic write left no temporary file
    assert load_for_inference(random_model(tmp_path / "raw.ckpt")).temperature == 1.0


def test_a_bad_stored_temperature_is_one_line():
    assert stored_temperature({}) == 1.0 and stored_temperature({"temperature": 2}) == 2.0
    for bad in (0, -1.5, "warm", None, float("nan")):
        with pytest.raises(ms_vit.CheckpointError, match="m.ckpt: metadata key 'temperature' .*scripts/calibrate.py"):
            stored_temperature({"temperature": bad}, "m.ckpt")


def test_infer_probabilities_use_the_stored_temperature(tmp_path, capsys):
    make_image_folder(tmp_path / "data", n_train=1, n_val=1)
    hot = write_temperature(random_model(tmp_path / "raw.ckpt"), 4.0, str(tmp_path / "hot.ckpt"))
    probs = {}
    for name, extra in (("hot", []), ("raw", ["--temperature", "1"])):
        out = tmp_path / name
        assert run(script("infer"), ["--ckpt", hot, "--input", str(tmp_path / "data" / "val"), "--output", str(out),
                                     "--topk", "3"] + extra) == 0
        saved = json.loads((out / "predictions.json").read_text())
        probs[name] = np.array([[t["probability"] for t in sorted(r["top"], key=lambda t: t["index"])]
                                for r in saved["predictions"]])
        assert saved["temperature"] == (4.0 if name == "hot" else 1.0)
    assert "temperature 4" in capsys.readouterr().out
    # softmax(logits / T) from the raw probabilities: log p = logits - a constant per row.
    np.testing.assert_allclose(probs["hot"], softmax(np.log(probs["raw"]) / 4.0, axis=1), atol=1e-6)
    assert np.abs(probs["hot"] - probs["raw"]).max() > 1e-3


def test_calibrate_script_fits_and_stores_and_eval_uses_it(tmp_path, capsys):
    make_image_folder(tmp_path / "data", n_train=4, n_val=2)
    ckpt = random_model(tmp_path / "m.ckpt")
    held, copy = str(tmp_path / "data" / "train"), str(tmp_path / "copy.ckpt")
    assert run(script("calibrate"), ["--ckpt", ckpt, "--data_dir", held, "--output", copy]) == 0
    printed = capsys.readouterr().out
    assert "NLL" in printed and "ECE" in printed and f"temperature stored in {copy}" in printed
    assert "temperature" not in ms_vit.read_checkpoint(ckpt).meta  # --output: the source is left as it was
    meta = ms_vit.read_checkpoint(copy).meta
    temperature = meta["temperature"]
    assert temperature > 0 and meta["calibration"]["images"] == 12 and meta["class_names"] == NAMES
    assert meta["calibration"]["nll_after"] <= meta["calibration"]["nll_before"]
    out = tmp_path / "r" / "report.json"
    assert run(script("eval"), ["--ckpt", copy, "--data_dir", held, "--json", str(out)]) == 0
    assert f"temperature {temperature:.4g} (the checkpoint's)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["temperature"] == temperature
    assert report["ece"] == pytest.approx(meta["calibration"]["ece_after"], abs=1e-9)
    assert report["loss"] == pytest.approx(meta["calibration"]["nll_after"], abs=1e-9)


def test_eval_temperature_1_shows_the_raw_logits(tmp_path):
    from ms_vit.evaluate.run import evaluate

    make_image_folder(tmp_path / "data", n_train=1, n_val=2)
    val = str(tmp_path / "data" / "val")
    net = load_for_inference(write_temperature(random_model(tmp_path / "m.ckpt"), 0.25))
    found_raw = evaluate(net, val, temperature=1, log=lambda *a: None)
    stored = evaluate(net, val, log=lambda *a: None)
    assert (stored["temperature"], found_raw["temperature"]) == (0.25, 1.0)
    assert stored["top_1"] == found_raw["top_1"] and stored["macro_f1"] == found_raw["macro_f1"]  # no ranking moves
    from ms_vit.evaluate.run import folder_logits

    logits = folder_logits(net, val)
    assert found_raw["ece"] == pytest.approx(metrics.expected_calibration_error(logits["logits"], logits["labels"]))
    assert stored["ece"] == pytest.approx(metrics.expected_calibration_error(logits["logits"] / 0.25,
                                                                             logits["labels"]))
    assert stored["loss"] == pytest.approx(mean_nll(logits["logits"], logits["labels"], 0.25))
    assert stored["ece"] != pytest.approx(found_raw["ece"])


def test_an_empty_or_unreadable_held_out_folder_is_one_line_naming_it(tmp_path, capsys):
    ckpt = random_model(tmp_path / "m.ckpt")
    empty = tmp_path / "empty"
    os.makedirs(empty)
    no_images = tmp_path / "no_images"
    os.makedirs(no_images / "blue")
    broken = tmp_path / "broken"
    os.makedirs(broken / "blue")
    (broken / "blue" / "a.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    for folder in (empty, no_images, broken, tmp_path / "missing"):
        assert run(script("calibrate"), ["--ckpt", ckpt, "--data_dir", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(folder) in err, err
    assert "temperature" not in ms_vit.read_checkpoint(ckpt).meta
    for argv, fragment in ((["--temperature", "0"], "--temperature must be a positive number"),
                           (["--temperature", "-2"], "--temperature must be a positive number")):
        assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(empty)] + argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err
    (tmp_path / "m.safetensors").write_bytes(b"x")
    assert run(script("calibrate"), ["--ckpt", str(tmp_path / "m.safetensors"), "--data_dir", str(empty)]) == 2
    assert "convert it first" in capsys.readouterr().err
