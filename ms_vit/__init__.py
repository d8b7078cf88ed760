"""ms_vit: fine-tune, evaluate and run Vision Transformers with MindSpore on Ascend, GPU or CPU."""

from importlib.metadata import PackageNotFoundError, version as _version

from .checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, ViTConfig, model_config
from .errors import CheckpointError, ConfigError, MsVitError
from .factory import create_model, from_pretrained
from .loss import CrossEntropySmooth
from .model import AttentionOutput, FeatureExtractor, ViT
from .runtime import set_up
from .train import fine_tune

try:  # one version number: pyproject.toml's, as installed (requirements.txt installs this project)
    __version__ = _version("ms_vit")
except PackageNotFoundError:  # a copy of the source that was never installed
    __version__ = "0+unknown"

__all__ = ["AttentionOutput", "CheckpointError", "ConfigError", "CrossEntropySmooth", "FeatureExtractor",
           "LoadReport", "MsVitError", "PRESETS", "TrainConfig", "ViT", "ViTConfig", "create_model", "fine_tune",
           "from_pretrained",
           "load_checkpoint", "model_config", "read_checkpoint", "save_checkpoint", "set_up"]
