"""Configuration, in one place: the network's (model.py: ViTConfig and the presets) and the fine-tuning run's
(train.py: every key declared once with its section, help and valid values), and what is generated from those
declarations (document.py: the command line, --help, docs/keys.md)."""

from ms_vit.config.model import (CONFIG_FIELDS, GELU_FORMS, IMAGENET_MEAN, IMAGENET_STD, NORM_IMPLS, POOLS, PRESETS,
                                 ViTConfig, check_keys, model_config)
from ms_vit.config.train import (FINETUNE_MODES, SECTION_KEYS, SECTIONS, TRAIN_FIELDS, AugmentKeys, FinetuneKeys,
                                 OptimKeys, TrainConfig, make_train_config, read_yaml)

__all__ = ["AugmentKeys", "CONFIG_FIELDS", "FinetuneKeys", "OptimKeys", "FINETUNE_MODES", "GELU_FORMS", "IMAGENET_MEAN", "IMAGENET_STD", "NORM_IMPLS", "POOLS",
           "PRESETS", "SECTIONS", "SECTION_KEYS", "TRAIN_FIELDS", "TrainConfig", "ViTConfig", "check_keys",
           "make_train_config", "model_config", "read_yaml"]
