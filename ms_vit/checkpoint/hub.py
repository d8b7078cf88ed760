"""Pretrained weights named ``hf-hub:ORG/NAME[@REVISION]``, fetched once into the Hugging Face cache.

timm uses the same names (its weights live in hub repos ``timm/NAME``), and the cache is the one transformers and
timm share, so a model any of them downloaded before is reused. Only three files are fetched, one
``hf_hub_download`` each: ``config.json``, ``model.safetensors`` and, when the repo has it,
``preprocessor_config.json``. ms_vit never reads ``pytorch_model.bin``: it is a pickle, and loading it can run code.

``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read when ``resolve_hub`` is called, not
when ``huggingface_hub`` is imported (it copies them into constants at import), so setting them later still counts.
Every failure is one ``ConfigError`` line that names the model and the fix.
"""

from __future__ import annotations

import glob
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass

from ms_vit.errors import ConfigError

HUB_PREFIX = "hf-hub:"
DEFAULT_ENDPOINT = "https://huggingface.co"

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "preprocessor_config.json"

# The hub's own rules for a repo id part (huggingface_hub's validate_repo_id): ASCII letters, digits, '_', '-', '.',
# starting and ending with a letter, digit or '_', at most 96 characters, no '--' or '..'.
_PART = re.compile(r"\w(?:[\w.-]{0,94}\w)?", re.ASCII)
# Branches, tags, commit shas and PR refs ("refs/pr/3").
_REVISION = re.compile(r"[\w.-]+(?:/[\w.-]+)*", re.ASCII)
_EXAMPLE = "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"


@dataclass
class HubWeights:
    """A hub model resolved to a local snapshot folder."""

    name: str  # "ORG/NAME"
    revision: str  # the commit sha the files came from
    path: str  # snapshot folder with config.json, model.safetensors and, if the repo has it, preprocessor_config.json


def is_hub_name(value: str) -> bool:
    """True for a pretrained-weights name of the form ``hf-hub:...``."""
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_hub_name(value: str) -> tuple[str, str | None]:
    """Split ``hf-hub:ORG/NAME[@REVISION]`` into ``("ORG/NAME", REVISION or None)``; malformed is a ConfigError."""
    if not is_hub_name(value):
        raise ConfigError(f"{value!r} is not a hub name: write {HUB_PREFIX}ORG/NAME[@REVISION], e.g. {_EXAMPLE}")
    body = value[len(HUB_PREFIX):]
    name, at, revision = body.partition("@")
    if "/" not in name:
        raise ConfigError(f"hub name {value!r} has no ORG/: write {HUB_PREFIX}ORG/NAME[@REVISION] "
                          f"(timm weights are {HUB_PREFIX}timm/NAME, e.g. {_EXAMPLE})")
    org, _, repo = name.partition("/")
    for part in (org, repo):
        if not _PART.fullmatch(part) or "--" in part or ".." in part:
            raise ConfigError(f"hub name {value!r} is malformed: ORG and NAME are 1-96 letters, digits, '_', '-' "
                              f"or '.', with no '/', '--' or '..', e.g. {_EXAMPLE}")
    if at and (not _REVISION.fullmatch(revision) or ".." in revision):
        raise ConfigError(f"hub name {value!r} has a malformed revision {revision!r}: after '@' give a branch, "
                          "tag or commit sha (letters, digits, '_', '-', '.', '/')")
    return name, (revision if at else None)


def resolve_hub(value: str, log=print) -> HubWeights:
    """Return the local snapshot folder of ``hf-hub:ORG/NAME[@REVISION]``, downloading its files on first use.

    Later calls reuse the cache (online, huggingface_hub only asks the hub which commit the revision is at);
    with ``HF_HUB_OFFLINE=1`` no request is made at all. ``log`` gets one line saying which happened.
    """
    name, revision = parse_hub_name(value)
    hub = _import_hub(value)
    settings = _Settings.from_environ(hub)
    before = _cached_snapshot_files(settings.cache_dir, name)
    fetch = _from_cache if settings.offline else _download
    with _one_line_errors(value, settings, hub.errors):
        config = fetch(hub, settings, name, CONFIG, revision)
        # The first file fixes the commit: the others are asked for at that sha, so all three come from the same
        # commit (the branch could move between requests) and, once cached, need no request at all.
        snapshot = os.path.dirname(config)
        sha = os.path.basename(snapshot)
        weights = fetch(hub, settings, name, WEIGHTS, sha)
        _fetch_optional(fetch, hub, settings, name, PREPROCESSOR, sha)
    label = f"{HUB_PREFIX}{name}@{sha}"
    if {config, weights} <= before:
        log(f"using {label} from {settings.cache_dir}")
    else:
        log(f"downloaded {label} into {settings.cache_dir}")
    return HubWeights(name=name, revision=sha, path=snapshot)  # a snapshot folder is named by its commit


def _import_hub(value: str):
    """huggingface_hub with the submodules used here loaded (its package imports them lazily)."""
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError:
        raise ConfigError(f"hub name {value} needs the huggingface_hub package: pip install huggingface_hub") from None
    return huggingface_hub


@dataclass
class _Settings:
    """The hub settings in force for one call, from the environment as it is now."""

    endpoint: str
    cache_dir: str
    offline_var: str  # the variable that turned offline mode on ("" when online), for the message

    @property
    def offline(self) -> bool:
        return bool(self.offline_var)

    @classmethod
    def from_environ(cls, hub) -> "_Settings":
        endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        offline_var = next((var for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if _is_true(os.environ.get(var))),
                           "")
        # huggingface_hub refuses every request when HF_HUB_OFFLINE was set at its import, even if unset since:
        # then only the cache can answer, so ask it alone and say so.
        if not offline_var and getattr(hub.constants, "HF_HUB_OFFLINE", False):
            offline_var = "HF_HUB_OFFLINE"
        return cls(endpoint=endpoint, cache_dir=_cache_dir(), offline_var=offline_var)


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str:
    """The hub cache folder, with huggingface_hub's precedence: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")  # the latter: legacy name
    if not explicit:
        default_home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
        explicit = os.path.join(os.environ.get("HF_HOME") or default_home, "hub")
    return os.path.expandvars(os.path.expanduser(explicit))


def _cached_snapshot_files(cache_dir: str, name: str) -> set[str]:
    """Paths of the files already in the repo's cached snapshots, to tell a download from a reuse afterwards."""
    storage = os.path.join(cache_dir, "models--" + name.replace("/", "--"))
    return {_normal(path) for path in glob.glob(os.path.join(glob.escape(storage), "snapshots", "*", "*"))}


def _normal(path: str) -> str:
    # The real path of the folder, not of the file: snapshot files are links into blobs/, the folder may be reached
    # through a linked cache folder.
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


class _MissingFile(Exception):
    """A file the cache does not hold (offline), or holds the hub's answer that the repo lacks it."""

    def __init__(self, filename: str, absent_in_repo: bool):
        super().__init__(filename)
        self.filename, self.absent_in_repo = filename, absent_in_repo


def _download(hub, settings: _Settings, name: str, filename: str, revision: str | None) -> str:
    """One file through huggingface_hub: a metadata request, then the body unless the cache has it."""
    path = hub.hf_hub_download(name, filename, revision=revision, cache_dir=settings.cache_dir,
                               endpoint=settings.endpoint, local_files_only=settings.offline,
                               library_name="ms_vit", library_version=_version())
    return _normal(path)


def _from_cache(hub, settings: _Settings, name: str, filename: str, revision: str | None) -> str:
    """One file from the cache alone. hf_hub_download(local_files_only=True) would still build request headers,
    and that may fetch huggingface_hub's agent registry over the network when offline mode was set after import."""
    found = hub.try_to_load_from_cache(name, filename, cache_dir=settings.cache_dir, revision=revision)
    if not isinstance(found, str):
        raise _MissingFile(filename, absent_in_repo=found is hub._CACHED_NO_EXIST)
    return _normal(found)


def _fetch_optional(fetch, hub, settings: _Settings, name: str, filename: str, sha: str) -> str | None:
    """A file the repo may lack: None when it has none (the cache remembers that, so it is not asked for again)."""
    if hub.try_to_load_from_cache(name, filename, cache_dir=settings.cache_dir, revision=sha) is hub._CACHED_NO_EXIST:
        return None
    try:
        return fetch(hub, settings, name, filename, sha)
    except (_MissingFile, hub.errors.RemoteEntryNotFoundError):
        return None


def _version() -> str:
    from ms_vit import __version__  # here, not at import: ms_vit/__init__ sets it after importing its modules

    return __version__


@contextmanager
def _one_line_errors(value: str, settings: _Settings, errors):
    """Turn what huggingface_hub raises (HTTP, connection, cache errors) into one ConfigError line."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:  # huggingface_hub's HTTP client errors share no base class with OSError
        raise ConfigError(_message(value, settings, errors, err)) from err


def _message(value: str, settings: _Settings, errors, err: Exception) -> str:
    """The one line for ``err``; the order matters: the hub's error classes inherit from one another."""
    if isinstance(err, errors.GatedRepoError):
        return (f"{value} is a gated repository at {settings.endpoint}: accept its terms on the model page and set "
                "HF_TOKEN (or run `hf auth login`), or check the spelling")
    if isinstance(err, errors.RepositoryNotFoundError):
        return (f"{value}: no such model repository at {settings.endpoint} (or it is private): check the spelling "
                f"of ORG/NAME, e.g. {_EXAMPLE}")
    if isinstance(err, errors.RevisionNotFoundError):
        return f"{value}: the repository has no such revision (branch, tag or commit): check the part after '@'"
    if isinstance(err, _MissingFile) and not err.absent_in_repo:
        return (f"{value} is not in the hub cache {settings.cache_dir} ({err.filename} missing) and "
                f"{settings.offline_var} is set: run once with network, or unset {settings.offline_var}")
    # Online, a local miss means the hub could not be asked: LocalEntryNotFoundError is an EntryNotFoundError too.
    if isinstance(err, errors.LocalEntryNotFoundError):
        return _connection_message(value, settings, errors, err)
    if isinstance(err, (_MissingFile, errors.EntryNotFoundError)):
        filename = err.filename if isinstance(err, _MissingFile) else _filename_of(err)
        if filename == WEIGHTS:
            return (f"{value} has no {WEIGHTS}: ms_vit reads safetensors weights only (pytorch_model.bin is a "
                    "pickle); pick a repository or revision that has model.safetensors")
        return f"{value} has no {filename or 'such file'}: it is not a model repository ms_vit can load"
    if isinstance(err, errors.HFValidationError):
        return f"{value} is not a valid hub name ({_first_line(err)}): write {HUB_PREFIX}ORG/NAME[@REVISION]"
    if _status_of(err) is not None:  # refused as it stands (401 for a bad HF_TOKEN, 403), not retried
        return (f"{settings.endpoint} answered HTTP {_status_of(err)} for {value} ({_first_line(err)}): check "
                "HF_TOKEN if set, and HF_ENDPOINT")
    if isinstance(err, PermissionError):
        return (f"cannot write {value}'s files into the hub cache {settings.cache_dir} ({_first_line(err)}): "
                "set HF_HOME or HF_HUB_CACHE to a writable folder")
    return (f"cannot fetch {value} from {settings.endpoint} into {settings.cache_dir} ({type(err).__name__}: "
            f"{_first_line(err)}): check the network or set HF_ENDPOINT to a mirror")


def _connection_message(value: str, settings: _Settings, errors, err: Exception) -> str:
    """The line for a hub that could not be asked: unreachable, down, or not a hub at all."""
    cause = err.__cause__
    where = "HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else "the default endpoint"
    if isinstance(cause, errors.FileMetadataError):
        # An answer without X-Repo-Commit or ETag: a proxy's or a web server's page, not a hub.
        return (f"{settings.endpoint} ({where}) did not answer as a Hugging Face hub for {value} (its answer lacks "
                "the hub's X-Repo-Commit or ETag header): check HF_ENDPOINT and the proxy settings")
    status = _status_of(cause)
    if status is not None:
        # An HTTP error without the hub's X-Error-Code: a server error, or a mirror or proxy that is no hub.
        return (f"{settings.endpoint} ({where}) answered HTTP {status} for {value} ({_first_line(cause)}): try "
                "again later, check HF_ENDPOINT, or set HF_HUB_OFFLINE=1 once the hub cache holds the model")
    reason = f"{type(cause).__name__}: {_first_line(cause)}" if cause is not None else _first_line(err)
    return (f"cannot reach {settings.endpoint} ({where}) for {value} ({reason}): check the network, set "
            "HF_ENDPOINT to a mirror, or set HF_HUB_OFFLINE=1 once the hub cache holds the model")


def _status_of(err: BaseException | None) -> int | None:
    """The HTTP status of the hub's answer behind ``err``, if there was one."""
    return getattr(getattr(err, "response", None), "status_code", None)


def _filename_of(err: Exception) -> str:
    """The file an HTTP error was about, from the request URL (``.../resolve/REV/FILENAME``)."""
    response = getattr(err, "response", None)
    request = getattr(response, "request", None) if response is not None else None
    url = str(getattr(request, "url", "") or "")
    return url.rsplit("/", 1)[-1] if "/resolve/" in url else ""


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
