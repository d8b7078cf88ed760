"""Linear probe (``finetune_mode: linear``): the frozen backbone's features are computed once, with the eval
transform, cached in ``output_dir/features/``, and only the head trains on them.

The cache file is named by a hash of the pretrained weights, the model's architecture, the preprocessing and every
image (path, label and content), so a changed checkpoint, image, label or preprocessing never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
from mindspore import nn

from ms_vit.atomic import atomic_path
from ms_vit.errors import ConfigError

FEATURE_FOLDER = "features"


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for folder, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                digest.update(os.path.relpath(full, path).encode() + b"\0" + file_digest(full).encode())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(weights: str, model: dict, preprocess: dict, splits: dict) -> str:
    """The feature cache's name: weights digest, architecture, preprocessing, and for each split its files (path
    and content digest, in order) and its labels. ``splits``: {name: (paths, labels)}."""
    digest = hashlib.sha256(json.dumps({"weights": weights, "model": model, "preprocess": preprocess},
                                       sort_keys=True).encode())
    for name, (paths, labels) in splits.items():
        digest.update(f"split {name}\n".encode())
        for path in paths:
            digest.update(f"{os.path.abspath(path)}\0{file_digest(path)}\n".encode())
        digest.update(np.asarray(labels, np.int64).tobytes())
    return digest.hexdigest()[:20]


class HeadNet(nn.Cell):
    """A ViT's classifier on its pre-logits features (B, D): its dropout and ``dense``, sharing their parameters
    (the names stay ``dense.weight``/``dense.bias``), so training this trains the ViT's head."""

    def __init__(self, vit):
        super().__init__(auto_prefix=False)
        self.config = vit.config
        self.dropout = vit.dropout
        self.dense = vit.dense

    def construct(self, features):
        return self.dense(self.dropout(features))


def extract_features(net, batches) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float32, labels (N,) int32) of ``net``'s frozen backbone over (image, label) batches."""
    import mindspore as ms

    from ms_vit.models.vit import FeatureExtractor

    extractor = FeatureExtractor(net)
    extractor.set_train(False)
    features, labels = [], []
    for images, label in batches.create_tuple_iterator(num_epochs=1, output_numpy=True):
        features.append(extractor(ms.Tensor(images)).asnumpy().astype(np.float32))
        labels.append(np.asarray(label, np.int32))
    return np.concatenate(features), np.concatenate(labels)


class FeatureSource:
    """A data source (``data.sources.FolderSource`` or ``CifarSource``) seen through the cached features of ``net``.

    ``train_data`` gives (feature, label) batches in the epoch's sample order (the order the image pipeline would
    use: ``data.epoch_indices``, the weighted draw with ``class_balance: sampler``); ``val_data`` the validation
    features in file order. Augmentation and mixing do not apply: the features come from the eval transform.
    """

    def __init__(self, source, net, cfg, weights_path: str, log):
        self.classes, self.bad_files, self.train_where = source.classes, source.bad_files, source.train_where
        self.cfg = cfg
        splits = source.eval_splits()
        prep = {k: getattr(cfg, k) for k in ("image_size", "mean", "std", "crop_pct", "interpolation")}
        key = cache_key(file_digest(weights_path), net.config.to_dict(), prep,
                        {name: (files, labels) for name, (_, labels, files) in splits.items()})
        self.path = os.path.join(cfg.output_dir, FEATURE_FOLDER, f"{key}.npz")
        arrays = self._read(log)
        if arrays is None:
            arrays = self._extract(net, splits, log)
        self.train_features, self.train_labels = arrays["train_features"], arrays["train_labels"]
        self.val_features, self.val_labels = arrays["val_features"], arrays["val_labels"]
        self.n_train = len(self.train_labels)

    def _read(self, log):
        if not os.path.isfile(self.path):
            return None
        try:
            with np.load(self.path) as cached:
                arrays = {k: cached[k] for k in ("train_features", "train_labels", "val_features", "val_labels")}
        except (OSError, ValueError, KeyError) as err:
            log(f"feature cache {self.path} is unreadable ({err}): extracting again")
            return None
        log(f"features: read from the cache {self.path} ({len(arrays['train_labels'])} train, "
            f"{len(arrays['val_labels'])} val)")
        return arrays

    def _extract(self, net, splits, log) -> dict:
        arrays = {}
        start = time.perf_counter()
        for name, (batches, _, _) in splits.items():
            arrays[f"{name}_features"], arrays[f"{name}_labels"] = extract_features(net, batches)
        seconds = time.perf_counter() - start
        count = sum(len(v) for k, v in arrays.items() if k.endswith("labels"))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with atomic_path(self.path, "{name}.{pid}.tmp.npz") as tmp:  # np.savez appends .npz to any other name
            np.savez(tmp, **arrays)
        log(f"features: extracted {count} images in {seconds:.1f} s ({count / max(seconds, 1e-9):.1f} img/s), "
            f"cached in {self.path}")
        return arrays

    def class_counts(self) -> np.ndarray:
        """Training images per class (the cached features' labels), in label order."""
        from ms_vit.data.balance import class_counts

        return class_counts(self.train_labels, len(self.classes))

    def train_data(self, epoch: int, rank: int, world: int, skip: int):
        import mindspore.dataset as ds

        from ms_vit.models.complexity import batching
        from ms_vit.data.folder import epoch_indices

        cfg = self.cfg
        order = epoch_indices(self.n_train, cfg, epoch, rank, world, where=self.train_where,
                              labels=self.train_labels)[skip:]
        data = ds.NumpySlicesDataset({"image": self.train_features[order], "label": self.train_labels[order]},
                                     shuffle=False)
        return data.batch(batching(cfg.section("data"), world).micro_batch, drop_remainder=cfg.drop_remainder)

    def val_data(self, rank: int = 0, world: int = 1):
        import mindspore.dataset as ds

        if world > 1:
            raise ConfigError("finetune_mode linear runs in one process: drop --device_num")
        data = ds.NumpySlicesDataset({"image": self.val_features, "label": self.val_labels}, shuffle=False)
        return data.batch(self.cfg.batch_size)
