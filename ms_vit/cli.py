"""Entry-point plumbing: every script's errors become one line on stderr, no traceback unless --debug."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ms_vit's one-line errors (no usage block)."""

    def error(self, message):
        from ms_vit.errors import ConfigError

        raise ConfigError(f"{self.prog}: {message} (see --help)")


def base_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every ms_vit script shares."""
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device_target", choices=("Ascend", "GPU", "CPU"), default=None,
                        help="device to run on (default: what MindSpore finds)")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return parser


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn ms_vit errors and bad paths into one ``error: ...`` line and exit code 2."""
    from ms_vit.errors import MsVitError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MS_VIT_DEBUG") == "1"
    try:
        return int(main(args) or 0)
    except (MsVitError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
