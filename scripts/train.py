"""Fine-tune a ViT on an ImageFolder data set: see ``bash run_finetune.sh --help``."""

import sys

from ms_vit.cli import run
from ms_vit.train.run import main

if __name__ == "__main__":
    sys.exit(run(main))
