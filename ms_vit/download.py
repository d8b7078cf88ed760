"""Fetch checkpoints and data sets by URL (the ``download`` package), check SHA-256, reuse what is there."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
import tarfile
from urllib.parse import urlparse

from ms_vit.atomic import atomic_path
from ms_vit.errors import ConfigError


def is_url(value: str) -> bool:
    return urlparse(value).scheme in ("http", "https", "ftp")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: str, dest_dir: str, sha256: str = "", log=print, key: str = "sha256") -> str:
    """Return a local path for ``source``: a path as it is, a URL downloaded into ``dest_dir`` (reused next time).

    A recorded ``sha256`` is checked on every download and on the reused file; a mismatch is an error and the
    mismatching download is removed (a file the user put there is never touched). Without one, a download logs the
    SHA-256 it computed and the configuration key that pins it (``key``: e.g. ``dataset_sha256``,
    ``pretrained_sha256``), so the next download can be checked.
    """
    if not is_url(source):
        if sha256 and os.path.isfile(source) and sha256_of(source) != sha256.lower():
            raise ConfigError(f"{source}: SHA-256 {sha256_of(source)} does not match the recorded {sha256}: "
                              "the file is corrupt or another version; fetch it again or fix the checksum")
        return source
    name = os.path.basename(urlparse(source).path) or "download"
    target = os.path.join(dest_dir, name)
    if os.path.isfile(target):
        if not sha256 or sha256_of(target) == sha256.lower():
            log(f"using {target} (downloaded earlier from {source})")
            return target
        log(f"{target} does not match the recorded SHA-256: downloading it again")
    os.makedirs(dest_dir, exist_ok=True)
    # Not per process: the download package resumes an interrupted download from "<its path>.part", so the path
    # it is given stays the same from run to run.
    with atomic_path(target, "{name}.part") as partial:
        try:
            from download import download

            download(source, partial, kind="file", replace=True, progressbar=False, verbose=False)
        except Exception as err:  # the download package raises bare Exceptions and requests/urllib errors
            raise ConfigError(f"cannot download {source} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}): check the address and network, or "
                              f"put the file at {target} by hand") from err
        got = sha256_of(partial)
        if sha256 and got != sha256.lower():
            raise ConfigError(f"{source}: downloaded SHA-256 {got} does not match the recorded {sha256}; the file "
                              "was removed: the server sent another file or it was corrupted in transit")
    if sha256:
        log(f"downloaded {source} to {target} (SHA-256 checked)")
    else:
        log(f"downloaded {source} to {target}: SHA-256 {got}, not checked: none is recorded (pin it with "
            f"{key}: {got})")
    return target


def unpack(archive: str, dest: str) -> str:
    """Unpack a zip or tar archive into ``dest`` once (a marker file records completion); returns ``dest``."""
    marker = os.path.join(dest, ".unpacked")
    if os.path.exists(marker):
        return dest
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                handle.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as handle:
                handle.extractall(tmp, filter="data")
        else:
            raise ConfigError(f"{archive} is neither a zip nor a tar archive: download it again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise ConfigError(f"{archive} is a damaged archive ({err}): delete it and download it again") from err
    open(os.path.join(tmp, ".unpacked"), "w").close()
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def find_split_root(folder: str) -> str:
    """The folder at or below ``folder`` (two levels at most) that holds both train/ and val/."""
    for root, dirs, _ in os.walk(folder):
        if {"train", "val"} <= set(dirs):
            return root
        if root[len(folder):].count(os.sep) >= 2:
            dirs[:] = []
    raise ConfigError(f"no folder with train/ and val/ inside {folder}: give --data_dir pointing at it")
