"""Eval on checkpoints whose predictions are fixed by construction: zero head weights, ordered biases."""

import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import make_image_folder, write_images

import ms_vit
from ms_vit.cli import run
from ms_vit.evaluate.run import evaluate, load_for_inference
from test_scripts import script


def constant_model(path, num_classes, bias_order, class_names=None):
    """A tiny ViT that ranks the classes by ``bias_order`` whatever the image (head weights zero)."""
    net = ms_vit.create_model("vit_tiny_test", num_classes=num_classes)
    bias = np.zeros(num_classes, np.float32)
    bias[list(bias_order)] = np.linspace(10, 6, len(bias_order))
    net.dense.weight.set_data(ms.Tensor(np.zeros((num_classes, 32), np.float32)))
    net.dense.bias.set_data(ms.Tensor(bias))
    if class_names is None:  # the tutorial's file: no metadata at all
        ms.save_checkpoint(net, str(path))
        return str(path)
    meta = {"model": net.config.to_dict(), "class_names": class_names, "crop_pct": 1.0}
    return ms_vit.save_checkpoint(net, path, meta=meta)


def test_known_top1_top5_and_per_class(tmp_path):
    names = ["blue", "green", "red", "white", "black", "c5", "c6", "c7", "c8", "c9"]
    ckpt = constant_model(tmp_path / "m.ckpt", 10, bias_order=[1, 7, 8, 9, 0], class_names=names)
    for name, count in (("blue", 1), ("green", 3), ("red", 2)):
        write_images(tmp_path / "data" / name, count, name)
    net = load_for_inference(ckpt)
    report = evaluate(net, str(tmp_path / "data"), batch_size=4, log=lambda *a: None)
    assert report["num_images"] == 6
    assert report["top_1"] == pytest.approx(3 / 6)  # every image predicted "green"
    assert report["top_5"] == pytest.approx(4 / 6)  # top-5 = green, c7, c8, c9, blue
    per_class = {c["name"]: c for c in report["per_class"]}
    assert (per_class["green"]["top_1"], per_class["blue"]["top_1"], per_class["blue"]["top_5"]) == (1.0, 0.0, 1.0)
    assert per_class["red"]["top_5"] == 0.0 and per_class["red"]["images"] == 2
    assert report["confusion"] == [[0, 1, 0, 0], [0, 3, 0, 0], [0, 2, 0, 0]]
    assert report["loss"] > 0 and report["images_per_s"] > 0


def test_wordnet_subset_of_a_1000_class_checkpoint(tmp_path):
    """The tutorial's case: 1000 classes, no names inside, val folders named by WordNet id."""
    ckpt = constant_model(tmp_path / "vit_b_16_224.ckpt", 1000, bias_order=[236, 3, 4, 5, 6])
    root = tmp_path / "val"
    for wnid, count in (("n01440764", 2), ("n02107142", 3)):
        write_images(root / wnid, count)
    report = evaluate(load_for_inference(ckpt), str(root), log=lambda *a: None)
    per_class = {c["folder"]: c for c in report["per_class"]}
    assert per_class["n02107142"]["index"] == 236 and per_class["n02107142"]["name"] == "Doberman"
    assert per_class["n01440764"]["index"] == 0 and per_class["n01440764"]["top_1"] == 0.0
    assert report["top_1"] == pytest.approx(3 / 5)  # not 0..k-1 re-indexing, which would score index 1
    os.makedirs(root / "not_a_wnid")
    with pytest.raises(ms_vit.ConfigError, match="not_a_wnid match none of the ImageNet-1k WordNet ids"):
        evaluate(load_for_inference(ckpt), str(root), log=lambda *a: None)


def test_eval_script_writes_the_report(tmp_path, capsys):
    names = ["blue", "green", "red"]
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[2, 0, 1], class_names=names)
    make_image_folder(tmp_path / "data", classes=names, n_train=1, n_val=2)
    out = tmp_path / "report" / "r.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data" / "val"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top-1 0.3333  top-3 1.0000" in printed and "images 6" in printed and "images/s" in printed
    report = json.loads(out.read_text())
    for key in ("top_1", "top_5", "loss", "num_images", "images_per_s", "per_class", "confusion", "checkpoint"):
        assert key in report
    assert os.path.getsize(tmp_path / "report" / "confusion.png") > 0
    assert (tmp_path / "report" / "confusion.csv").read_text().splitlines()[0] == \
        "true \\ predicted,blue,green,red,other"


def test_eval_script_bad_folder_is_one_line(tmp_path, capsys):
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[0], class_names=["a", "b", "c"])
    make_image_folder(tmp_path / "data", classes=("blue",), n_train=1, n_val=1)
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean the val/ folder" in err


def test_worst_predictions_lists_only_mistakes_most_confident_first():
    from ms_vit.evaluate.gallery import worst_predictions

    logits = np.log(np.array([[0.9, 0.1, 0.0 + 1e-9], [0.2, 0.7, 0.1], [0.05, 0.9, 0.05], [0.3, 0.3, 0.4],
                              [0.1, 0.6, 0.3]]))
    labels = np.array([0, 0, 0, 2, 2])  # right, wrong (0.7), wrong (0.9), right, wrong (0.6)
    files = [f"f{i}.jpg" for i in range(5)]
    worst = worst_predictions(logits, labels, files, ["a", "b", "c"], 10)
    assert [m["file"] for m in worst] == ["f2.jpg", "f1.jpg", "f4.jpg"]
    assert [round(m["probability"], 6) for m in worst] == [0.9, 0.7, 0.6]
    assert worst[0]["true_name"] == "a" and worst[0]["predicted_name"] == "b"
    assert worst[2]["true_probability"] == pytest.approx(0.3)
    assert len(worst_predictions(logits, labels, files, ["a", "b", "c"], 2)) == 2


def test_eval_gallery_writes_a_contact_sheet_of_the_mistakes(tmp_path, capsys):
    names = ["blue", "green", "red"]
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[2, 0, 1], class_names=names)  # always "red"
    make_image_folder(tmp_path / "data", classes=names, n_train=1, n_val=2)
    out = tmp_path / "report" / "r.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data" / "val"), "--json", str(out),
                                "--gallery", "3"]) == 0
    assert "most confident mistakes:" in capsys.readouterr().out
    report = json.loads(out.read_text())
    mistakes = report["mistakes"]
    assert len(mistakes) == 3 and all(m["predicted_name"] == "red" and m["true_name"] != "red" for m in mistakes)
    assert all(os.path.isfile(m["file"]) for m in mistakes)
    import cv2

    sheet = cv2.imread(report["gallery_png"])
    assert sheet is not None and sheet.shape[0] > 160 and sheet.shape[1] == 3 * 160


def test_report_metrics_match_scikit_learn_and_the_reliability_diagram_is_written(tmp_path, capsys):
    from sklearn import metrics as sk

    names = ["blue", "green", "red"]
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[2, 0, 1], class_names=names)  # always "red"
    make_image_folder(tmp_path / "data", classes=names, n_train=1, n_val=2)
    out = tmp_path / "report" / "r.json"
    assert run(script("eval"), ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data" / "val"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    labels, predicted = np.repeat([0, 1, 2], 2), np.full(6, 2)
    precision, recall, f1, _ = sk.precision_recall_fscore_support(labels, predicted, zero_division=0)
    for entry, p, r, f in zip(report["per_class"], precision, recall, f1):
        assert (entry["precision"], entry["recall"], entry["f1"]) == pytest.approx((p, r, f))
    assert report["per_class"][0]["precision"] == 0.0  # blue is never predicted: 0, not undefined
    assert report["macro_f1"] == pytest.approx(sk.f1_score(labels, predicted, average="macro", zero_division=0))
    assert report["weighted_f1"] == pytest.approx(sk.f1_score(labels, predicted, average="weighted", zero_division=0))
    assert report["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(labels, predicted))
    confidence = np.exp(10) / (np.exp(10) + np.exp(8) + np.exp(6))  # the same for every image: one bin
    assert report["ece"] == pytest.approx(abs(confidence - 1 / 3), abs=1e-6) and report["ece_bins"] == 15
    assert sum(b["count"] for b in report["reliability"]) == 6
    assert (report["tta"], report["temperature"]) == ("none", 1.0)
    assert f"macro-F1 {report['macro_f1']:.4f}  ECE {report['ece']:.4f}" in printed
    assert os.path.getsize(tmp_path / "report" / "reliability.png") > 0 and "reliability.png" in printed


def test_results_file_gets_one_row_per_eval(tmp_path, capsys):
    import csv

    from ms_vit.evaluate.run import RESULT_COLUMNS

    names = ["blue", "green", "red"]
    ckpt = constant_model(tmp_path / "m.ckpt", 3, bias_order=[2, 0, 1], class_names=names)
    make_image_folder(tmp_path / "data", classes=names, n_train=1, n_val=2)
    results = tmp_path / "runs" / "runs.csv"
    base = ["--ckpt", ckpt, "--data_dir", str(tmp_path / "data" / "val"), "--json", str(tmp_path / "r.json"),
            "--results_file", str(results)]
    assert run(script("eval"), base) == 0
    assert run(script("eval"), base + ["--tta", "flip", "--temperature", "2"]) == 0
    with open(results, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == RESULT_COLUMNS and len(rows) == 3
    first, second = (dict(zip(rows[0], row)) for row in rows[1:])
    assert first["checkpoint"] == ckpt and first["data"] == str(tmp_path / "data" / "val")
    assert (first["tta"], first["temperature"], second["tta"], second["temperature"]) == ("none", "1", "flip", "2")
    assert first["precision"] == second["precision"] == "fp32"  # the suite keeps fp32 (MS_VIT_BF16=0)
    assert first["num_images"] == "6" and float(first["top_1"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(first["macro_f1"]) == pytest.approx(1 / 6, abs=1e-6) and float(second["ece"]) > 0
    other = tmp_path / "other.csv"
    other.write_text("model,score\nx,1\n")
    assert run(script("eval"), base[:-1] + [str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--results_file {other} has other columns" in err
