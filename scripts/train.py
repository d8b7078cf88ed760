"""Fine-tune a ViT on an ImageFolder data set: see ``bash run_finetune.sh --help``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ms_vit.cli import run  # noqa: E402
from ms_vit.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
