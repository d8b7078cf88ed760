"""Reading, adapting, loading and writing checkpoints: one job per module.

read.py: a file -> flat {name: np.ndarray} and metadata (no pickle).  adapt.py: pure dict -> dict steps
(prefixes, optimizer state, position-embedding resize).  load.py: into a built net, with a LoadReport.
save.py: atomic writes with metadata.
"""

from .load import LoadReport, load_checkpoint, load_params
from .read import read_checkpoint
from .save import META_KEY, save_checkpoint

__all__ = ["LoadReport", "load_checkpoint", "load_params", "read_checkpoint", "save_checkpoint", "META_KEY"]
