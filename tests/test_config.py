import pytest

import ms_vit
from ms_vit.config import PRESETS, ViTConfig, model_config

# Parameter counts at 224 px with 1000 classes (the ViT paper's sizes; timm reports the same numbers).
PARAMETERS = {
    "vit_ti_16": 5_717_416,
    "vit_s_16": 22_050_664,
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_tiny_test": 24_234,  # at its own 32 px and 10 classes
    # DINOv2 at 224 px with a 1000-class head on the class token and mean patch token (2 x width inputs).
    "dinov2_s14": 22_397_800,
    "dinov2_b14": 87_261_928,
    "dinov2_l14": 305_276_904,
    "dinov2_s14_reg": 22_399_336,
    "dinov2_b14_reg": 87_265_000,
    "dinov2_l14_reg": 305_281_000,
}


def test_every_preset_has_a_pinned_parameter_count():
    assert set(PRESETS) == set(PARAMETERS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count(name):
    assert model_config(name).num_parameters == PARAMETERS[name]


def test_dinov2_s14_backbone_has_dinov2s_parameter_count():
    """transformers' Dinov2Model for ViT-S/14 (518 px) has 22,056,576 parameters, 384 of them its mask token (used
    only in DINOv2's masked pre-training, so ms_vit does not build it); the head is a 2 x 384 -> classes Dense."""
    cfg = model_config("dinov2_s14", image_size=518, num_classes=1000)
    head = 2 * 384 * 1000 + 1000
    assert cfg.num_parameters - head + 384 == 22_056_576


def test_analytic_count_equals_the_built_cell():
    for overrides in ({}, {"num_classes": 7, "image_size": 48, "mlp_dim": 40},
                      {"layer_scale": 1e-5, "num_register_tokens": 3, "pool": "cls_mean"}):
        net = ms_vit.create_model("vit_tiny_test", **overrides)
        assert sum(p.size for p in net.get_parameters()) == net.config.num_parameters


def test_defaults_are_the_tutorials_numerics():
    cfg = model_config("vit_b_16")
    assert (cfg.image_size, cfg.patch_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.mlp_dim) == \
        (224, 16, 768, 12, 12, 3072)
    assert cfg.layer_norm_eps == 1e-7 and cfg.gelu == "tanh" and cfg.pool == "cls"


def test_overrides_use_the_tutorials_names():
    cfg = model_config("vit_b_16", patch_size=32, embed_dim=384, num_layers=3, num_heads=6, mlp_dim=512,
                       drop_rate=0.1, attention_drop_rate=0.2, drop_path_rate=0.3, layer_norm_eps=1e-6, gelu="erf")
    assert (cfg.patch_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.mlp_dim) == (32, 384, 3, 6, 512)
    assert (cfg.drop_rate, cfg.attention_drop_rate, cfg.drop_path_rate) == (0.1, 0.2, 0.3)


@pytest.mark.parametrize("bad, fragment", [
    ({"patch_sise": 8}, "unknown model option 'patch_sise'; did you mean patch_size?"),
    ({"image_size": 230}, "not divisible by patch_size 16"),
    ({"num_heads": 5}, "num_heads 5 does not divide embed_dim 768"),
    ({"gelu": "relu"}, "gelu must be one of tanh, erf"),
    ({"drop_rate": 1.5}, "drop_rate must be in [0, 1)"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
])
def test_bad_options_are_one_line_errors(bad, fragment):
    with pytest.raises(ms_vit.ConfigError) as err:
        model_config("vit_b_16", **bad)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_names_the_closest():
    with pytest.raises(ms_vit.ConfigError, match="did you mean vit_b_16"):
        model_config("vit_b16")


def test_any_image_size_divisible_by_the_patch():
    assert ViTConfig(image_size=384).num_patches == 576
    assert ViTConfig(image_size=48, patch_size=16).grid_size == 3


def test_every_recipe_is_a_valid_config():
    import glob
    import os

    from conftest import ROOT

    from ms_vit.config import make_train_config, read_yaml

    recipes = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert any(path.endswith("dinov2_s14_finetune.yaml") for path in recipes)
    for path in recipes:
        make_train_config(read_yaml(path))
