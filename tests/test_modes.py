"""Fine-tuning modes (full, linear, frozen, lora), mixup/cutmix and EMA, on the tiny model and tiny folders."""

import os

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY, make_image_folder, run_interrupted_and_resumed, write_images

import ms_vit
from ms_vit.config import make_train_config
from ms_vit.errors import ConfigError
from ms_vit.train.run import fine_tune

RUN = {"model": TINY, "image_size": 32, "batch_size": 4, "epochs": 4, "optimizer": "adamw", "lr": 3e-3,
       "crop_scale": [0.7, 1.0], "num_workers": 1, "log_every": 100}
OPTIMIZER_STATE = ("moment", "beta", "learning_rate", "global_step", "adam_", "scale_sense")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("modes") / "data", n_train=8, n_val=4)


def train(folder, out, log=None, **overrides):
    values = {**RUN, "data_dir": folder, "output_dir": str(out), **overrides}
    return fine_tune(make_train_config(values), log=log or (lambda *a: None))


def read_metrics(out):
    import csv

    with open(os.path.join(out, "metrics.csv")) as handle:
        return list(csv.DictReader(handle))


def params_of(path, skip=OPTIMIZER_STATE):
    return {k: v for k, v in ms_vit.read_checkpoint(str(path)).params.items() if not k.startswith(skip)}


@pytest.mark.parametrize("mode,extra,trainable", [
    ("full", {}, None),
    ("linear", {}, 32 * 3 + 3),  # the head only: dim 32 x 3 classes + bias
    ("frozen", {"freeze_blocks": 1}, None),
    ("lora", {"lora_rank": 2}, 2 * 2 * ((32 + 96) * 2 + (32 + 32) * 2) // 2 + 32 * 3 + 3),
])
def test_each_mode_trains_its_loss_falls_and_its_best_ckpt_is_plain(folder, pretrained, tmp_path, mode, extra,
                                                                    trainable):
    result = train(folder, tmp_path / mode, pretrained=pretrained, finetune_mode=mode, **extra)
    rows = read_metrics(tmp_path / mode)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    count = sum(int(np.prod(p.shape)) for p in result.net.trainable_params())
    if trainable is not None:
        assert count == trainable
    best = ms_vit.read_checkpoint(str(tmp_path / mode / "best.ckpt"))
    plain = {p.name for p in ms_vit.create_model(TINY, num_classes=3).get_parameters()}
    assert set(best.params) == plain  # no adapter, no EMA, no optimizer state: eval/infer/from_pretrained need nothing
    assert best.meta["finetune_mode"] == mode


def test_frozen_parameters_stay_bitwise_equal_and_get_no_gradient(folder, pretrained, tmp_path):
    train(folder, tmp_path / "frozen", pretrained=pretrained, finetune_mode="frozen", freeze_blocks=1,
                   epochs=2)
    start, end = params_of(pretrained), params_of(tmp_path / "frozen" / "checkpoints" / "epoch_002.ckpt")
    frozen = [n for n in start if n in ("cls", "pos_embedding") or n.startswith(("patch_embedding.",
                                                                                  "transformer.layers.0."))]
    assert len(frozen) == 4 + 12  # 4 embedding tensors, 12 in block 0
    for name in frozen:
        np.testing.assert_array_equal(end[name], start[name], err_msg=name)
    assert not np.array_equal(end["transformer.layers.1.0.cell.1.qkv.weight"],
                              start["transformer.layers.1.0.cell.1.qkv.weight"])
    # Not a zero learning rate: the optimizer holds no state for a frozen parameter, so none has a gradient.
    saved = ms_vit.read_checkpoint(str(tmp_path / "frozen" / "checkpoints" / "epoch_002.ckpt")).params
    assert not [n for n in saved if n.startswith(("moment1.", "adam_m.")) and n.split(".", 1)[1] in frozen]
    assert any(n.startswith(("moment1.", "adam_m.")) for n in saved)


def test_frozen_encoder_stops_the_gradient_at_the_last_frozen_block(tiny_net, images):
    """Input gradients vanish when every block is frozen: the backward pass ends at the stop."""
    x = ms.Tensor(images(2))

    def total(inp):
        return tiny_net(inp).sum()

    assert float(np.abs(ms.grad(total)(x).asnumpy()).max()) > 0
    tiny_net.transformer.frozen_blocks = 2
    assert float(np.abs(ms.grad(total)(x).asnumpy()).max()) == 0


def test_lora_merged_best_gives_the_adapted_models_logits(folder, pretrained, tmp_path, images):
    from ms_vit.train.lora import add_lora

    train(folder, tmp_path / "lora", pretrained=pretrained, finetune_mode="lora", lora_rank=4,
          lora_targets=["qkv", "proj", "mlp"], epochs=2, keep_checkpoints=2)
    best = ms_vit.read_checkpoint(str(tmp_path / "lora" / "best.ckpt"))
    assert not [n for n in best.params if "lora" in n]
    # The training checkpoint of the same epoch keeps the adapters apart from the (unchanged) base weights.
    state = params_of(tmp_path / "lora" / "checkpoints" / f"epoch_{best.meta['epoch']:03d}.ckpt")
    assert sum(n.endswith((".lora_a", ".lora_b")) for n in state) == 2 * 2 * 4  # 2 blocks x 4 layers x (A, B)
    np.testing.assert_array_equal(state["transformer.layers.0.0.cell.1.qkv.weight"],
                                  params_of(pretrained)["transformer.layers.0.0.cell.1.qkv.weight"])
    # Each merged weight is W + (alpha / r) B A of that checkpoint's own tensors (alpha 16, rank 4), in NumPy;
    # every other tensor of best.ckpt is the training state's as it is.
    layers = [n[:-len(".lora_a")] for n in state if n.endswith(".lora_a")]
    for layer in layers:
        w, a, b = (state[f"{layer}.{part}"].astype(np.float64) for part in ("weight", "lora_a", "lora_b"))
        np.testing.assert_allclose(best.params[f"{layer}.weight"], w + (16.0 / 4) * (b @ a), rtol=1e-5, atol=1e-6,
                                   err_msg=layer)
        assert not np.allclose(best.params[f"{layer}.weight"], w, atol=1e-6), layer  # the adapters add something
    for name in set(best.params) - {f"{layer}.weight" for layer in layers}:
        np.testing.assert_array_equal(best.params[name], state[name], err_msg=name)
    adapted = ms_vit.create_model(TINY, num_classes=3)
    add_lora(adapted, rank=4, alpha=16.0, targets=("qkv", "proj", "mlp"))
    ms.load_param_into_net(adapted, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in state.items()
                                     if not n.startswith("ema.")})
    adapted.set_train(False)
    merged = ms_vit.from_pretrained(str(tmp_path / "lora" / "best.ckpt"))
    merged.set_train(False)
    x = ms.Tensor(images(4))
    unmerged_logits, merged_logits = adapted(x).asnumpy(), merged(x).asnumpy()
    assert float(np.abs(state["transformer.layers.0.0.cell.1.qkv.lora_b"]).max()) > 0  # the adapters trained
    np.testing.assert_allclose(merged_logits, unmerged_logits, atol=1e-5)


def test_feature_cache_is_reused_and_rebuilt_when_checkpoint_or_image_changes(tmp_path, pretrained):
    data = make_image_folder(tmp_path / "data", n_train=4, n_val=2)
    out = tmp_path / "linear"

    def run_linear(weights):
        """The feature cache's files after a linear run: {name: modification time in ns}."""
        train(data, out, pretrained=weights, finetune_mode="linear", epochs=1)
        folder = out / "features"
        return {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)}

    first = run_linear(pretrained)
    assert len(first) == 1 and run_linear(pretrained) == first  # read, not written again
    write_images(os.path.join(data, "train", "red"), 1, "green", seed=9)  # the same file name, another image
    changed = run_linear(pretrained)
    assert len(changed) == 2 and set(first) < set(changed)
    other = str(tmp_path / "other.ckpt")
    ms.set_seed(7)
    ms.save_checkpoint(ms_vit.create_model(TINY), other)
    third = run_linear(other)
    assert len(third) == 3
    assert run_linear(pretrained) == third  # each key keeps its own file: read again, nothing rewritten
    assert len(os.listdir(out / "features")) == 3


def test_linear_best_ckpt_is_the_backbone_of_the_cached_features_with_the_trained_head(tmp_path, pretrained):
    from ms_vit.data.folder import eval_dataset
    from ms_vit.train.linear_probe import FEATURE_FOLDER
    from ms_vit.models.vit import FeatureExtractor

    data = make_image_folder(tmp_path / "data", n_train=4, n_val=2)
    train(data, tmp_path / "out", pretrained=pretrained, finetune_mode="linear", epochs=2)
    folder = tmp_path / "out" / FEATURE_FOLDER
    cache = np.load(os.path.join(folder, os.listdir(folder)[0]))
    best = ms_vit.read_checkpoint(str(tmp_path / "out" / "best.ckpt"))
    meta = best.meta
    batches = eval_dataset(os.path.join(data, "val"), {"blue": 0, "green": 1, "red": 2}, 32, meta["crop_pct"],
                           meta["mean"], meta["std"], 6, interpolation=meta["interpolation"])
    images = ms.Tensor(next(batches.create_tuple_iterator(num_epochs=1, output_numpy=True))[0])
    model = ms_vit.from_pretrained(str(tmp_path / "out" / "best.ckpt"))
    model.set_train(False)
    extractor = FeatureExtractor(model)
    extractor.set_train(False)
    np.testing.assert_allclose(extractor(images).asnumpy(), cache["val_features"], atol=1e-5)
    head = cache["val_features"] @ best.params["dense.weight"].T + best.params["dense.bias"]
    np.testing.assert_allclose(model(images).asnumpy(), head, atol=1e-4)
    np.testing.assert_array_equal(best.params["patch_embedding.conv.weight"],
                                  params_of(pretrained)["patch_embedding.conv.weight"])


def smoothed_one_hot(labels, k, s):
    """ms_vit's label smoothing, written out: 1 - s on the true class, s / (k - 1) elsewhere."""
    targets = np.full((len(labels), k), s / (k - 1))
    targets[np.arange(len(labels)), labels] = 1 - s
    return targets


def pasted_box(mixed, images):
    """The (y0, y1, x0, x1) box where sample 0 holds the last sample's pixels (None when nowhere)."""
    pasted = (mixed[0] == images[-1]).all(axis=0)
    rows, cols = np.nonzero(pasted)
    if not rows.size:
        return None
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def mix(images, labels, rng, mix=True, **keys):
    """ms_vit.data.mixup.mix_batch on 5 classes with the mixing keys ``keys`` (mixup_alpha, cutmix_alpha,
    label_smoothing: a TrainConfig's names); the only place the mixup tests call the module."""
    from ms_vit.data.mixup import mix_batch

    cfg = make_train_config({"label_smoothing": 0.0, **keys})
    return mix_batch(images, labels, cfg.section("augment"), 5, cfg.label_smoothing, rng, mix=mix)


def test_mixed_images_and_targets_are_the_same_mix_of_the_batch_and_its_reverse():
    """Mixup: images and targets are lam * x + (1 - lam) * x reversed, the same lam for both. CutMix: one box of the
    reversed batch pasted into every image, the rest untouched, and 1 - lam is the box's share of the image."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)  # no two samples share a pixel value
    labels = np.array([0, 1, 2, 3, 4, 0])
    kinds = []
    for keys in ({"mixup_alpha": 0.8, "label_smoothing": 0.1}, {"cutmix_alpha": 1.0},
                 {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}):
        plain = smoothed_one_hot(labels, 5, keys.get("label_smoothing", 0.0))
        seen = set()
        for seed in range(12):
            mixed, targets, lam = mix(images, labels, np.random.default_rng(seed), **keys)
            assert mixed.shape == images.shape and mixed.dtype == images.dtype and 0 <= lam <= 1
            np.testing.assert_allclose(targets, lam * plain + (1 - lam) * plain[::-1], atol=1e-6)
            box = pasted_box(mixed, images)
            if box is None:  # mixup: every pixel the same blend
                np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], atol=1e-6)
                assert 0 < lam < 1
                seen.add("mixup")
                continue
            y0, y1, x0, x1 = box
            inside = np.zeros((16, 16), bool)
            inside[y0:y1, x0:x1] = True
            for i in range(6):  # the same box in every sample, from the sample at the mirrored position
                np.testing.assert_array_equal(mixed[i][:, inside], images[5 - i][:, inside])
                np.testing.assert_array_equal(mixed[i][:, ~inside], images[i][:, ~inside])
            assert 1 - lam == pytest.approx(inside.mean(), abs=1e-9)
            seen.add("cutmix")
        kinds.append(seen)
    assert kinds == [{"mixup"}, {"cutmix"}, {"mixup", "cutmix"}]
    plain, targets, lam = mix(images, labels, rng, mix=False, mixup_alpha=0.8)
    assert lam == 1.0 and np.array_equal(plain, images)
    np.testing.assert_allclose(targets, smoothed_one_hot(labels, 5, 0.0), atol=0)


def test_mixing_depends_only_on_seed_epoch_and_batch(tmp_path):
    """A pipeline resumed after k batches mixes its remaining batches as the uninterrupted one does."""
    from ms_vit.data import folder as data

    folder = make_image_folder(tmp_path / "data", n_train=8, n_val=1)
    cfg = make_train_config({**RUN, "data_dir": folder, "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1})
    index = {"blue": 0, "green": 1, "red": 2}

    def batches(skip=0):
        pipeline = data.train_dataset(os.path.join(folder, "train"), index, cfg, 1, skip=skip)
        return list(pipeline.create_tuple_iterator(num_epochs=1, output_numpy=True))

    full, resumed = batches(), batches(skip=8)
    assert full[0][1].shape == (4, 3) and full[0][1].dtype == np.float32
    assert not np.allclose(full[0][1].max(axis=1), 0.9)  # mixed: not every target is a smoothed one-hot
    for (a_img, a_tgt), (b_img, b_tgt) in zip(full[2:], resumed):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_tgt, b_tgt)
    off = make_train_config({**RUN, "data_dir": folder, "mixup_alpha": 0.8, "mixup_off_epoch": 1})
    plain = list(data.train_dataset(os.path.join(folder, "train"), index, off, 1)
                 .create_tuple_iterator(num_epochs=1, output_numpy=True))
    # Epoch 2 of mixup_off_epoch 1: plain targets, each the smoothed one-hot (0.9 and 0.05 for 3 classes, the default
    # smoothing 0.1) of the sample's class, and every class's 8 images once.
    targets = np.concatenate([t for _, t in plain])
    assert targets.shape == (24, 3)
    np.testing.assert_allclose(targets, smoothed_one_hot(targets.argmax(axis=1), 3, off.label_smoothing), atol=1e-6)
    assert off.label_smoothing > 0 and np.bincount(targets.argmax(axis=1), minlength=3).tolist() == [8, 8, 8]


def test_ctrl_c_mid_epoch_resumes_exactly_with_mixup_cutmix_and_ema(tmp_path):
    values = {**RUN, "epochs": 2, "lr": 1e-3, "crop_scale": [0.08, 1.0], "num_workers": 2, "log_every": 1,
              "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "ema_decay": 0.9,
              "data_dir": make_image_folder(tmp_path / "data", n_train=8, n_val=2)}
    assert 0 < run_interrupted_and_resumed(values, tmp_path)["step_in_epoch"]
    full = params_of(tmp_path / "full" / "checkpoints" / "epoch_002.ckpt", skip=("learning_rate", "global_step"))
    resumed = params_of(tmp_path / "cut" / "checkpoints" / "epoch_002.ckpt", skip=("learning_rate", "global_step"))
    assert set(full) == set(resumed) and "ema.dense.weight" in full and "ema.updates" in full
    assert max(float(np.abs(full[k] - resumed[k]).max()) for k in full) <= 1e-6


def top1_of(path, folder):
    """Val top-1 of a checkpoint's weights, computed here: its own preprocessing, the model's argmax."""
    from ms_vit.data.folder import eval_dataset

    meta = ms_vit.read_checkpoint(str(path)).meta
    batches = eval_dataset(os.path.join(folder, "val"), {"blue": 0, "green": 1, "red": 2}, meta["image_size"],
                           meta["crop_pct"], meta["mean"], meta["std"], 64, interpolation=meta["interpolation"])
    images, labels = next(batches.create_tuple_iterator(num_epochs=1, output_numpy=True))
    model = ms_vit.from_pretrained(str(path))
    model.set_train(False)
    return float((model(ms.Tensor(images)).asnumpy().argmax(axis=1) == labels).mean())


def test_ema_is_validated_and_best_holds_the_weights_of_the_best_top1(folder, tmp_path):
    train(folder, tmp_path / "ema", ema_decay=0.6, epochs=3, keep_checkpoints=3)
    rows = read_metrics(tmp_path / "ema")
    assert all(r["ema_top_1"] != "" and r["ema_val_loss"] != "" for r in rows)
    best = ms_vit.read_checkpoint(str(tmp_path / "ema" / "best.ckpt"))
    # best.ckpt's own weights, evaluated here, score the best top-1 of either kind of weights over the run.
    best_of_run = max(max(float(r["top_1"]), float(r["ema_top_1"])) for r in rows)
    assert top1_of(tmp_path / "ema" / "best.ckpt", folder) == pytest.approx(best_of_run, abs=1e-6)
    # And they are the weights its metadata names: that epoch's trained weights or its EMA shadows.
    state = params_of(tmp_path / "ema" / "checkpoints" / f"epoch_{best.meta['epoch']:03d}.ckpt")
    prefix = "ema." if best.meta["weights"] == "ema" else ""
    for name, value in best.params.items():
        np.testing.assert_array_equal(value, state[prefix + name], err_msg=name)
    state = params_of(tmp_path / "ema" / "checkpoints" / "epoch_003.ckpt")
    assert not np.array_equal(state["ema.dense.weight"], state["dense.weight"])  # an average, not a copy


def test_best_ckpt_takes_the_ema_weights_when_they_validate_better_and_only_on_a_new_best(tmp_path):
    """EpochEnd with an EMA, on weights whose top-1 is known in advance: a head of zero weights and a one-hot bias
    predicts its class for every image, so its top-1 is that class's share of the val labels (8, 5, 3 of 16).

    epoch 1: trained 5/16, EMA 3/16 -> best.ckpt: the trained weights;
    epoch 2: trained 3/16, EMA 8/16 -> best.ckpt: the EMA weights (a new best, by the EMA);
    epoch 3: trained 3/16, EMA 5/16 -> the EMA is better this epoch but no new best: best.ckpt stays epoch 2's.
    """
    from types import SimpleNamespace

    import mindspore.dataset as ds

    from ms_vit.train.callbacks import EpochEnd, RunState
    from ms_vit.train.run import build_train_cell

    ms.set_seed(0)
    net = ms_vit.create_model(TINY, num_classes=3)
    cfg = make_train_config({"model": TINY, "ema_decay": 0.5, "epochs": 3})
    cell, _ = build_train_cell(net, cfg, num_classes=3, steps_per_epoch=1, amp_level="O0")
    shadows = {p.name[len("ema."):]: p for p in cell.get_parameters()
               if p.name.startswith("ema.") and p.name != "ema.updates"}
    weights = {p.name: p for p in net.trainable_params()}
    assert set(shadows) == set(weights)
    trained_body = {n: p.asnumpy().copy() for n, p in weights.items()}
    ema_body = {n: v + 0.25 for n, v in trained_body.items()}  # every EMA weight differs from the trained one

    def predict(class_index, params, body):
        for name, param in params.items():
            value = body[name]
            if name == "dense.weight":
                value = np.zeros_like(value)
            elif name == "dense.bias":
                value = np.eye(3, dtype=np.float32)[class_index] * 5
            param.set_data(ms.Tensor(value.astype(np.float32)))

    labels = np.array([0] * 8 + [1] * 5 + [2] * 3, np.int32)
    images = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    val = ds.NumpySlicesDataset({"image": images, "label": labels}, shuffle=False).batch(6)
    state = RunState(3, 1, 16, np.full(3, 1e-3, np.float32))
    out = tmp_path / "run"
    os.makedirs(out / "checkpoints")
    lines = []
    epoch_end = EpochEnd(state, val, cell, net, str(out), {"format": "ms_vit"}, 3, log=lines.append)
    expected = {1: (1, 2, 1, "trained", 5 / 16), 2: (2, 0, 0, "ema", 8 / 16), 3: (2, 1, 0, "ema", 8 / 16)}
    for epoch, (trained_class, ema_class, best_class, best_kind, best_top1) in expected.items():
        predict(trained_class, weights, trained_body)
        predict(ema_class, shadows, ema_body)
        state.epoch, state.losses = epoch - 1, [1.0]
        epoch_end.on_train_epoch_end(SimpleNamespace(original_args=lambda: SimpleNamespace(cur_epoch_num=epoch)))
        row = state.history[-1]
        assert (row["top_1"], row["ema_top_1"]) == (np.mean(labels == trained_class), np.mean(labels == ema_class))
        np.testing.assert_array_equal(net.dense.bias.asnumpy(), np.eye(3)[trained_class] * 5)  # swapped back
        best = ms_vit.read_checkpoint(str(out / "best.ckpt"))
        assert (best.meta["epoch"], best.meta["weights"]) == (2 if epoch > 1 else 1, best_kind), epoch
        assert best.meta["best_top1"] == pytest.approx(best_top1)
        assert int(np.argmax(best.params["dense.bias"])) == best_class
        body = ema_body if best_kind == "ema" else trained_body
        for name in ("transformer.layers.1.1.cell.1.dense2.weight", "norm.gamma", "cls"):
            np.testing.assert_array_equal(best.params[name], body[name], err_msg=f"epoch {epoch}: {name}")


def test_ema_update_follows_its_warm_up_formula(tiny_net):
    from ms_vit.train.ema import EMA

    params = [p for p in tiny_net.trainable_params() if p.name == "dense.bias"]
    ema = EMA(params, decay=0.99)
    start = params[0].asnumpy().copy()
    params[0].set_data(ms.Tensor(start + 1.0))
    ema()
    decay = min(0.99, 2.0 / 11.0)  # update 1: (1 + n) / (10 + n)
    shadow = {p.name: p for p in ema.get_parameters()}["ema.dense.bias"].asnumpy()
    np.testing.assert_allclose(shadow, decay * start + (1 - decay) * (start + 1.0), atol=1e-6)
    with ema.swapped_in():
        np.testing.assert_allclose(params[0].asnumpy(), shadow)
    np.testing.assert_array_equal(params[0].asnumpy(), start + 1.0)


@pytest.mark.parametrize("values,fragment", [
    ({"lora_rank": 0}, "lora_rank must be at least 1"),
    ({"finetune_mode": "frozen", "freeze_blocks": 13}, "freeze_blocks 13 is more than the model's 12 blocks: use 0 .. 12"),
    ({"auto_augment": "rand"}, "auto_augment must be one of none, randaugment, trivialaugment, autoaugment"),
    ({"mixup_alpha": -0.2}, "mixup_alpha must not be negative"),
    ({"finetune_mode": "linear"}, "finetune_mode linear trains only the head"),
    ({"finetune_mode": "partial"}, "finetune_mode must be one of full, linear, frozen, lora"),
    ({"lora_targets": ["qkv", "ffn"]}, "lora_targets must be some of qkv, proj, mlp"),
    ({"freeze_blocks": 2}, "freeze_blocks applies to finetune_mode frozen"),
    ({"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
])
def test_each_bad_option_is_one_line_naming_the_key_and_its_values(values, fragment):
    with pytest.raises(ConfigError) as err:
        make_train_config(values)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_command_line_takes_the_mode_keys():
    from ms_vit.config.document import parse_config

    cfg = parse_config(["--finetune_mode", "lora", "--lora_targets", "qkv", "mlp", "--mixup_alpha", "0.8",
                        "--ema_decay", "0.999", "--auto_augment", "randaugment"])
    assert (cfg.finetune_mode, cfg.lora_targets, cfg.mixup_alpha, cfg.ema_decay, cfg.auto_augment) == \
        ("lora", ["qkv", "mlp"], 0.8, 0.999, "randaugment")


def test_strong_recipe_parses_and_turns_everything_on():
    from ms_vit.config.document import parse_config

    cfg = parse_config(["--config", os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                                 "vit_b_16_finetune_strong.yaml")])
    assert cfg.auto_augment == "randaugment" and cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0
    assert cfg.ema_decay > 0 and cfg.random_erasing > 0 and cfg.drop_path_rate > 0 and cfg.layer_decay < 1
    assert cfg.optimizer == "adamw"


def test_feature_cache_key_changes_with_labels_preprocessing_and_architecture(tmp_path):
    """A cached feature file is reused only for the same weights, architecture, preprocessing, files and labels: each
    of those changes the key (the file and checkpoint cases run end to end in the test above)."""
    from ms_vit.config import model_config
    from ms_vit.train.linear_probe import cache_key

    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    prep = {"image_size": 32, "mean": [0.0] * 3, "std": [1.0] * 3, "crop_pct": 0.875, "interpolation": "bilinear"}
    model = model_config(TINY).to_dict()
    splits = {"train": ([str(image)], [0])}
    base = cache_key("digest", model, prep, splits)
    assert base == cache_key("digest", dict(model), dict(prep), {"train": ([str(image)], [0])})
    changed = [cache_key("digest", model, prep, {"train": ([str(image)], [1])}),
               cache_key("digest", model, {**prep, "interpolation": "bicubic"}, splits),
               cache_key("digest", model, {**prep, "crop_pct": 1.0}, splits),
               cache_key("digest", model_config(TINY, num_layers=1).to_dict(), prep, splits),
               cache_key("digest", model_config(TINY, pool="cls_mean").to_dict(), prep, splits),
               cache_key("other", model, prep, splits)]
    assert base not in changed and len(set(changed)) == len(changed)
