"""One validation loss: metrics.csv's val_loss is eval.py's loss (plain cross-entropy, averaged over images)."""

import os

import mindspore as ms
import numpy as np
import pytest
from conftest import make_image_folder, read_metrics

import ms_vit
from ms_vit import CrossEntropySmooth
from ms_vit.data import folder as data
from ms_vit.train.callbacks import EvalLogits, val_sums, validate
from ms_vit.evaluate.run import evaluate, load_for_inference, summarize


def test_metrics_csv_val_loss_is_the_eval_py_loss_of_best_ckpt(tiny_run):
    # The shared run: 9 val images in batches of 4, so the last batch holds 1, and a label-smoothed training loss, so
    # both the smoothing and a mean of batch means would move val_loss away from eval.py's.
    assert (tiny_run.config["batch_size"], tiny_run.config["label_smoothing"]) == (4, 0.1)
    best = str(tiny_run.output_dir / "best.ckpt")
    rows = {int(r["epoch"]): r for r in read_metrics(tiny_run.output_dir)}
    row = rows[ms_vit.read_checkpoint(best).meta["epoch"]]
    report = evaluate(load_for_inference(best), os.path.join(tiny_run.data_dir, "val"), batch_size=16,
                      log=lambda *a: None)
    assert report["num_images"] == 9
    assert abs(report["loss"] - float(row["val_loss"])) <= 1e-5
    assert abs(report["top_1"] - float(row["top_1"])) <= 1e-6 and abs(report["top_5"] - float(row["top_5"])) <= 1e-6


def test_validate_averages_over_images_not_batches(tmp_path, tiny_net):
    make_image_folder(tmp_path / "val", classes=("blue", "green", "red"), n_train=0, n_val=3)
    folder = str(tmp_path / "val" / "val")
    index = data.class_indexing(folder, ["blue", "green", "red"])
    batches = data.eval_dataset(folder, index, 32, 1.0, [127.5] * 3, [127.5] * 3, 4, 1)  # 4 + 4 + 1 images
    tiny_net.set_train(False)
    eval_net = EvalLogits(tiny_net)
    result = validate(eval_net, batches)
    logits, labels, batch_means = [], [], []
    for images, y in batches.create_tuple_iterator(output_numpy=True):  # the same logits (graphs compiled already)
        out = eval_net(ms.Tensor(images)).asnumpy().astype(np.float64)
        logits.append(out)
        labels.append(y)
        batch_means.append(val_sums(out, y)[3] / len(y))
    expected = summarize(np.concatenate(logits), np.concatenate(labels), index, [str(i) for i in range(10)], 1.0, {})
    assert result["images"] == result["local_images"] == 9
    assert abs(result["loss"] - expected["loss"]) <= 1e-9
    assert (result["top_1"], result["top_5"]) == (expected["top_1"], expected["top_5"])
    assert abs(np.mean(batch_means) - expected["loss"]) > 1e-4  # the per-batch mean (nn.Loss) would differ


def test_val_sums_match_summarize():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((7, 10)) * 4, rng.integers(0, 10, 7)
    count, top1, top5, loss_sum = val_sums(logits.astype(np.float32), labels)
    report = summarize(logits.astype(np.float32).astype(np.float64), labels, {str(i): i for i in range(10)},
                       [str(i) for i in range(10)], 1.0, {})
    assert count == 7 and top1 / 7 == report["top_1"] and top5 / 7 == report["top_5"]
    assert abs(loss_sum / 7 - report["loss"]) <= 1e-12


@pytest.mark.parametrize("k", [2, 10, 1000])
@pytest.mark.parametrize("s", [0.1, 0.3])
def test_timm_label_smoothing_is_ours_with_s_times_k_minus_1_over_k(k, s):
    """timm's LabelSmoothingCrossEntropy(s) puts s/K on every class (1 - s + s/K on the true one); ours puts
    smooth/(K-1) on the others, so smooth = s(K-1)/K gives timm's targets. PYNATIVE: the loss's arithmetic, without
    compiling a graph for each of the 12 cells (training compiles it in every run)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(k)
    logits, labels = (rng.standard_normal((6, k)) * 3).astype(np.float32), rng.integers(0, k, 6).astype(np.int32)
    x = logits.astype(np.float64)
    log_probs = x - x.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    nll = -log_probs[np.arange(6), labels]
    timm = ((1 - s) * nll + s * -log_probs.mean(1)).mean()  # timm: confidence * nll + smoothing * smooth_loss
    ours = CrossEntropySmooth(smooth_factor=s * (k - 1) / k, num_classes=k)(ms.Tensor(logits), ms.Tensor(labels))
    assert abs(float(ours.asnumpy()) - timm) <= 1e-5
    plain = CrossEntropySmooth(smooth_factor=s, num_classes=k)(ms.Tensor(logits), ms.Tensor(labels))
    assert abs(float(plain.asnumpy()) - timm) > 1e-4  # the same number means something else
