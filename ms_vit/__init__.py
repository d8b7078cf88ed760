"""ms_vit: fine-tune, evaluate and run Vision Transformers with MindSpore on Ascend, GPU or CPU."""

from .checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, ViTConfig, model_config
from .errors import CheckpointError, ConfigError, MsVitError
from .factory import create_model, from_pretrained
from .loss import CrossEntropySmooth
from .model import AttentionOutput, FeatureExtractor, ViT
from .runtime import set_up
from .train import fine_tune

__version__ = "0.1.0"

__all__ = ["AttentionOutput", "CheckpointError", "ConfigError", "CrossEntropySmooth", "FeatureExtractor",
           "LoadReport", "MsVitError", "PRESETS", "TrainConfig", "ViT", "ViTConfig", "create_model", "fine_tune",
           "from_pretrained",
           "load_checkpoint", "model_config", "read_checkpoint", "save_checkpoint", "set_up"]
