"""Reading, adapting, loading and writing checkpoints: one job per module.

read.py: a file -> flat {name: np.ndarray} and metadata (no pickle).  adapt.py: pure dict -> dict steps
(prefixes, optimizer state, position-embedding resize).  load.py: into a built net, with a LoadReport.
save.py: atomic writes with metadata.  pretrained_cfg.py: the preprocessing each source's weights expect.
"""

from ms_vit.checkpoint.load import LoadReport, load_checkpoint, load_params
from ms_vit.checkpoint.pretrained_cfg import SOURCE_PREPROCESS, resolve_preprocess, source_preprocess
from ms_vit.checkpoint.read import read_checkpoint
from ms_vit.checkpoint.save import META_KEY, save_checkpoint

__all__ = ["LoadReport", "load_checkpoint", "load_params", "read_checkpoint", "save_checkpoint", "META_KEY",
           "SOURCE_PREPROCESS", "resolve_preprocess", "source_preprocess"]
