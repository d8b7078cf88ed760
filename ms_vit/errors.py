"""The errors ms_vit raises for bad input: each message is one line naming the file or key and the fix."""


class MsVitError(Exception):
    """Base class: a user-facing error whose message is complete on one line (shown without a traceback)."""


class ConfigError(MsVitError, ValueError):
    """A bad option, preset name or configuration key."""


class CheckpointError(MsVitError, ValueError):
    """A checkpoint file that cannot be read, or whose parameters do not fit the network."""
