"""Where training's images come from: the data folder (as given, downloaded, or the generated demo) and the two
sources a run reads, ImageFolder class folders and CIFAR-10 binary files, behind one protocol (``TrainingSource``;
the linear probe's cached features, ``train.linear_probe.FeatureSource``, follow it too)."""

from __future__ import annotations

import os
from typing import Protocol

from ms_vit.config import TrainConfig
from ms_vit.data import folder as data
from ms_vit.errors import ConfigError


class TrainingSource(Protocol):
    """What the training loop asks of its data. A source keeps the run's configuration it was opened with (the
    data, preprocessing and augmentation keys its pipelines read)."""

    classes: list  # class names, in label order
    n_train: int  # training images (readable ones)
    bad_files: set  # unreadable files skipped in every epoch
    train_where: str  # the training split's folder (named by messages and the batch plan)

    def class_counts(self):
        """Readable training images per class, in label order (``class_balance``'s weights come from them)."""

    def train_data(self, epoch: int, rank: int, world: int, skip: int):
        """Epoch ``epoch``'s training batches of process ``rank`` of ``world``, ``skip`` images in."""

    def val_data(self, rank: int = 0, world: int = 1):
        """This process's shard of the validation batches."""

    def eval_splits(self) -> dict:
        """{"train" | "val": (eval-transform batches, labels, files)} over every readable image of each split."""


def open_source(data_dir: str, cfg: TrainConfig, log) -> TrainingSource:
    """The source for ``cfg.dataset``, checked (class folders, unreadable images) before anything trains."""
    return (CifarSource if cfg.dataset == "cifar10" else FolderSource)(data_dir, cfg, log)


def download_folder(url: str) -> str:
    """Where ``resolve_data_dir`` unpacks dataset_url's archive: dataset/<the archive's name up to its first dot>."""
    from urllib.parse import urlparse

    return os.path.join("dataset", (os.path.basename(urlparse(url).path) or "download").split(".")[0])


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder + os.sep)


def resolve_data_dir(data_keys, log) -> str:
    """The folder holding train/ and val/: as given, downloaded and unpacked from dataset_url, or generated.
    ``data_keys``: the run's data keys (``config.DataKeys``).

    A data_dir that is given must exist (a mistyped folder is an error, never a silent download), with two
    exceptions: demo_data generates it, and a data_dir inside dataset_url's own download folder (a recipe that
    names where its download lands) is downloaded.
    """
    from ms_vit.download import fetch, find_split_root, unpack

    if data_keys.demo_data:
        from ms_vit.data.demo import is_complete, make_shapes_dataset, needs_generation

        root = data_keys.data_dir or "dataset/demo"
        if needs_generation(root):  # before the non-empty check: a half-written demo folder is not empty either
            log(f"generating the demo data set (6 shape classes) in {root}")
            return make_shapes_dataset(root)
        if is_complete(root):
            return root
    if data_keys.data_dir and os.path.isdir(data_keys.data_dir) and os.listdir(data_keys.data_dir):
        return data_keys.data_dir
    url = data_keys.dataset_url
    if url and data_keys.data_dir and not _inside(data_keys.data_dir, download_folder(url)):
        if not os.path.exists(data_keys.data_dir):
            raise ConfigError(f"data folder {data_keys.data_dir} does not exist: correct --data_dir, or leave it out "
                              f"to download dataset_url into {download_folder(url)}")
        url = ""  # given and there: an empty folder or a file is reported below, nothing is downloaded
    if data_keys.dataset == "cifar10" and not url:
        from ms_vit.data.cifar import find_root

        return find_root(data_keys.data_dir or "dataset/cifar-10-batches-bin")  # raises the error that says what to get
    if url:
        archive = fetch(url, "dataset", data_keys.dataset_sha256, log=log, key="dataset_sha256")
        unpacked = unpack(archive, download_folder(url))
        return unpacked if data_keys.dataset == "cifar10" else find_split_root(unpacked)
    if not data_keys.data_dir:
        raise ConfigError("no data: give --data_dir DIR (with train/ and val/), --dataset_url URL, or run "
                          "--config configs/demo.yaml for the built-in demo")
    data.class_folders(data_keys.data_dir)  # raises the right error for a missing path or a file
    raise ConfigError(f"data folder {data_keys.data_dir} is empty: it needs train/ and val/ class folders")


class FolderSource:
    """ImageFolder data: ``train/`` and ``val/`` class folders, checked for unreadable images before training."""

    def __init__(self, data_dir: str, cfg: TrainConfig, log):
        self.data_dir, self.cfg = data_dir, cfg
        self.train_where, self.val_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "val")
        self.classes = data.train_classes(self.train_where)
        self.train_index = {name: i for i, name in enumerate(self.classes)}
        self.val_index = data.class_indexing(self.val_dir, self.classes)
        self.bad_files = check_images(data_dir, cfg.image_size, cfg.bad_images, log)
        self.n_train = data.count_images(self.train_where, self.train_index) - len(
            [p for p in self.bad_files if p.startswith(self.train_where)])

    def class_counts(self):
        from ms_vit.data.balance import class_counts

        files, labels = data.labelled_files(self.train_where, self.train_index)
        return class_counts([y for f, y in zip(files, labels) if f not in self.bad_files], len(self.classes))

    def train_data(self, epoch: int, rank: int, world: int, skip: int):
        return data.train_dataset(self.train_where, self.train_index, self.cfg, epoch, rank, world, skip=skip,
                                  exclude_files=self.bad_files)

    def eval_splits(self) -> dict:
        """{"train" | "val": (eval-transform batches, labels, files)} over every readable image of each split: the
        linear probe's inputs (``linear_probe.FeatureSource``)."""
        import numpy as np

        cfg = self.cfg
        splits = {}
        for name, folder, index in (("train", self.train_where, self.train_index), ("val", self.val_dir, self.val_index)):
            files, labels = data.labelled_files(folder, index)
            keep = np.array([i for i, f in enumerate(files) if f not in self.bad_files], np.int64)
            batches = data.eval_dataset(folder, index, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std, cfg.batch_size,
                                        cfg.num_workers, interpolation=cfg.interpolation, sampler_indices=keep)
            splits[name] = (batches, labels[keep], [files[i] for i in keep])
        return splits

    def val_data(self, rank: int = 0, world: int = 1):
        from ms_vit.distributed import shard_indices

        cfg = self.cfg
        shard = shard_indices(data.count_images(self.val_dir, self.val_index), rank, world) if world > 1 else None
        return data.eval_dataset(self.val_dir, self.val_index, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std,
                                 cfg.batch_size, cfg.num_workers, interpolation=cfg.interpolation,
                                 sampler_indices=shard)


class CifarSource:
    """CIFAR-10 binary files: the five training batches, validated on ``test_batch.bin`` (as seed 000 reports)."""

    def __init__(self, data_dir: str, cfg: TrainConfig, log):
        from ms_vit.data import cifar

        self.cfg = cfg
        self.root = self.train_where = cifar.find_root(data_dir)
        self.classes = cifar.class_names(self.root)
        self.train_arrays = cifar.read_split(self.root, "train")  # once: every epoch's pipeline reuses it
        self.n_train = len(self.train_arrays[1])
        cifar.split_files(self.root, "test")
        self.bad_files: set = set()

    def class_counts(self):
        from ms_vit.data.balance import class_counts

        return class_counts(self.train_arrays[1], len(self.classes))

    def train_data(self, epoch: int, rank: int, world: int, skip: int):
        from ms_vit.data import cifar

        return cifar.train_dataset(self.root, self.cfg, epoch, rank, world, skip, arrays=self.train_arrays)

    def eval_splits(self) -> dict:
        """As ``FolderSource.eval_splits``: the training and test batches with the eval transform."""
        from ms_vit.data import cifar

        cfg = self.cfg
        transforms = cifar.eval_transforms(cfg.image_size, cfg.mean, cfg.std)
        splits = {}
        for name, split, arrays in (("train", "train", self.train_arrays), ("val", "test", None)):
            arrays = arrays or cifar.read_split(self.root, split)
            batches = cifar.dataset(self.root, split, transforms, cfg.batch_size,
                                    num_workers=cfg.num_workers or data.default_workers(), arrays=arrays)
            splits[name] = (batches, arrays[1], cifar.split_files(self.root, split))
        return splits

    def val_data(self, rank: int = 0, world: int = 1):
        from ms_vit.data import cifar
        from ms_vit.distributed import shard_indices

        cfg = self.cfg
        shard = shard_indices(cifar.count(self.root, "test"), rank, world) if world > 1 else None
        return cifar.dataset(self.root, "test", cifar.eval_transforms(cfg.image_size, cfg.mean, cfg.std),
                             cfg.batch_size, num_workers=cfg.num_workers or data.default_workers(),
                             sampler_indices=shard)


# Up to this many images the check before training decodes every one (a few seconds); above, sizes and magic bytes.
FULL_CHECK_LIMIT = 20_000


def check_images(data_dir: str, image_size: int, bad_images: str, log) -> set:
    """The data check before training, and the unreadable-image policy. Returns the unreadable files (to skip)."""
    from ms_vit.data.check import scan

    total = sum(len(data.list_images(os.path.join(data_dir, split, c))) for split in ("train", "val")
                for c in data.class_folders(os.path.join(data_dir, split)))
    unreadable = scan(data_dir, image_size, full=total <= FULL_CHECK_LIMIT).unreadable()
    data.set_bad_images(bad_images)
    if not unreadable:
        return set()
    first = unreadable[0]
    if bad_images == "fail":
        raise ConfigError(f"{len(unreadable)} unreadable image file(s) in {data_dir}, first {first.path} ({first.kind}): "
                          f"move them away with python scripts/check_data.py {data_dir} --quarantine DIR, or pass "
                          "--bad_images skip")
    log(f"skipping {len(unreadable)} unreadable image file(s) ({first.path}, ...): see python scripts/check_data.py "
        f"{data_dir}")
    return {f.path for f in unreadable}
