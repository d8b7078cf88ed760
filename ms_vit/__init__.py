"""ms_vit: fine-tune, evaluate and run Vision Transformers with MindSpore on Ascend, GPU or CPU."""

from importlib.metadata import PackageNotFoundError, version as _version

from ms_vit.checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from ms_vit.config import PRESETS, TrainConfig, ViTConfig, model_config
from ms_vit.errors import CheckpointError, ConfigError, MsVitError
from ms_vit.models.factory import create_model, from_pretrained
from ms_vit.train.loss import CrossEntropySmooth
from ms_vit.models.vit import AttentionOutput, FeatureExtractor, ViT
from ms_vit.runtime import set_up
from ms_vit.train.run import fine_tune

try:  # one version number: pyproject.toml's, as installed (requirements.txt installs this project)
    __version__ = _version("ms_vit")
except PackageNotFoundError:  # a copy of the source that was never installed
    __version__ = "0+unknown"

__all__ = ["AttentionOutput", "CheckpointError", "ConfigError", "CrossEntropySmooth", "FeatureExtractor",
           "LoadReport", "MsVitError", "PRESETS", "TrainConfig", "ViT", "ViTConfig", "create_model", "fine_tune",
           "from_pretrained",
           "load_checkpoint", "model_config", "read_checkpoint", "save_checkpoint", "set_up"]
