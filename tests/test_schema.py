"""The training keys' schema (ms_vit.config.train): each key declared once, and what comes from the declarations:
--help, validation, the generated docs, the model and preprocessing overrides, the compile cache's keys."""

import dataclasses

import pytest

from ms_vit.config import CONFIG_FIELDS, SECTION_KEYS, SECTIONS, TRAIN_FIELDS, TrainConfig, make_train_config
from ms_vit.config.document import build_parser, keys_markdown, main as document_main, parse_config
from ms_vit.config.train import DEAD_KEYS, LAUNCHER, Key, read_yaml
from ms_vit.errors import ConfigError


def spec(name) -> Key:
    return TRAIN_FIELDS[name].metadata["key"]


def test_docs_keys_and_the_readme_list_are_current():
    """Fails when a key was added or changed without `python -m ms_vit.config.document --write`."""
    assert document_main(["--check"]) == 0


def test_every_key_is_declared_with_a_section_and_help():
    assert set(TRAIN_FIELDS) == {k for keys in SECTION_KEYS.values() for k in keys}
    for name in TRAIN_FIELDS:
        assert spec(name).section in SECTIONS and len(spec(name).help) > 10, name
    assert all(SECTION_KEYS[s] for s in SECTIONS)


def test_help_is_grouped_by_section_with_every_key_its_values_and_the_launcher():
    text = build_parser({}).format_help()
    positions = [text.index(f"\n{section}:\n") for section in SECTIONS]
    assert positions == sorted(positions)
    for name in TRAIN_FIELDS:
        block = text[text.index(f"\n  --{name} ") + 3:]
        block = block[:block.index("\n  --") if "\n  --" in block else len(block)]
        assert spec(name).help.split()[0] in block, name
        if spec(name).choices:
            assert str(spec(name).choices[-1]) in " ".join(block.split()), name
    for option, _ in LAUNCHER:
        assert option in text
    assert "--device_num N" in keys_markdown() and "CLUSTER_TIMEOUT" in keys_markdown()


def test_choices_and_ranges_are_checked_from_the_declarations():
    checked = 0
    for name in TRAIN_FIELDS:
        s = spec(name)
        bad = None
        if s.choices:
            bad = ["nonsense"] if isinstance(getattr(TrainConfig(), name), list) else "nonsense"
        elif s.low is not None:
            bad = s.low if s.low_open else s.low - 1
        elif s.high is not None:
            bad = s.high + 1
        if bad is None:
            continue
        if isinstance(getattr(TrainConfig(), name), int) and not isinstance(bad, str):
            bad = int(bad)
        with pytest.raises(ConfigError, match=name):
            TrainConfig(**{name: bad})
        checked += 1
    assert checked >= 60
    with pytest.raises(ConfigError, match="lr must be positive, got 0.0 \\(peak learning rate\\)"):
        TrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        TrainConfig(batch_size=2.5)


def test_a_removed_key_says_what_replaces_it(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("device_num: 8\nepochs: 1\n")
    with pytest.raises(ConfigError, match="device_num was removed: .*run_finetune.sh --device_num N"):
        read_yaml(str(recipe))
    with pytest.raises(ConfigError, match="device_num was removed"):
        parse_config(["--device_num", "2"])
    assert set(DEAD_KEYS).isdisjoint(TRAIN_FIELDS)


def test_unset_model_keys_inherit_and_set_ones_reach_the_model():
    assert make_train_config({}).model_overrides() == {"image_size": 224, "drop_rate": 0.0,
                                                      "attention_drop_rate": 0.0, "drop_path_rate": 0.0}
    every = {"patch_size": 8, "embed_dim": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 128,
             "token_learner_tokens": 4, "token_learner_layer": 1, "token_fuser": True, "pool": "mean",
             "num_register_tokens": 0, "gelu": "erf", "layer_norm_eps": 1e-6, "norm_impl": "kernel"}
    overrides = make_train_config(every).model_overrides()
    assert {k: v for k, v in every.items() if v} == {k: overrides[k] for k, v in every.items() if v}
    assert set(overrides) <= set(CONFIG_FIELDS) and "strict_head" not in overrides
    prep = make_train_config({"mean": [1, 2, 3], "interpolation": "bicubic"}).preprocess_overrides()
    assert prep == {"mean": [1.0, 2.0, 3.0], "interpolation": "bicubic"}


def test_graph_values_leave_out_exactly_the_keys_declared_outside_the_graph():
    cfg = make_train_config({})
    outside = {k for k in TRAIN_FIELDS if not spec(k).graph}
    assert set(cfg.graph_values()) == set(TRAIN_FIELDS) - outside
    assert {"output_dir", "resume", "log_every", "pretrained", "data_dir"} <= outside
    assert {"lr", "batch_size", "accum_steps", "finetune_mode", "image_size"}.isdisjoint(outside)


def test_sections_are_what_modules_receive():
    cfg = make_train_config({"lr": 0.01, "mixup_alpha": 0.2, "finetune_mode": "frozen", "freeze_blocks": 1,
                             "model": "vit_tiny_test"})
    optim = cfg.section("optim")
    assert [f.name for f in dataclasses.fields(optim)] == list(SECTION_KEYS["optim"]) and optim.lr == 0.01
    assert cfg.section("finetune").freeze_blocks == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        optim.lr = 1.0
    assert cfg.changed("augment") == ["mixup_alpha"]
