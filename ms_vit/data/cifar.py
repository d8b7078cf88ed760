"""CIFAR-10 in its binary format (``cifar-10-batches-bin``): reading, checking, writing, and the training pipelines.

Each record is one label byte and a 32x32 RGB image as 1024 red, 1024 green, then 1024 blue bytes, row-major; the
training split is ``data_batch_1.bin`` .. ``data_batch_5.bin``, the test split ``test_batch.bin``. The pickled
"python version" is refused: unpickling runs code. MindSpore's ``Cifar10Dataset`` reads this format too but insists
on 10,000 records per file, so ms_vit reads the files with NumPy (any record count, each file's size checked) and
feeds them to the same ``mindspore.dataset`` map/batch pipeline.
"""

from __future__ import annotations

import os

import numpy as np

from ms_vit.errors import ConfigError

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
META_FILE = "batches.meta.txt"
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# Channel statistics of the CIFAR-10 training images, in 0-255 pixel units (Normalize works on raw pixels).
MEAN = (125.31, 122.95, 113.87)
STD = (62.99, 62.09, 66.70)


def find_root(data_dir: str) -> str:
    """The folder holding the binary files: ``data_dir`` itself or its ``cifar-10-batches-bin`` (as unpacked)."""
    for folder in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin")):
        if os.path.isfile(os.path.join(folder, TEST_FILE)) or os.path.isfile(os.path.join(folder, TRAIN_FILES[0])):
            return folder
    if not os.path.isdir(data_dir):
        raise ConfigError(f"CIFAR-10 folder {data_dir} does not exist: download the binary version ({BINARY_URL}), "
                          f"unpack it and pass its folder as --data_dir")
    if os.path.isfile(os.path.join(data_dir, "data_batch_1")) or os.path.isdir(os.path.join(data_dir,
                                                                                             "cifar-10-batches-py")):
        raise ConfigError(f"{data_dir} holds the pickled python version of CIFAR-10, which ms_vit does not read "
                          f"(unpickling runs code): download the binary version ({BINARY_URL})")
    raise ConfigError(f"no CIFAR-10 binary files ({TRAIN_FILES[0]} .. {TEST_FILE}) in {data_dir}: download the binary "
                      f"version ({BINARY_URL}) and unpack it there")


def split_files(root: str, split: str) -> list[str]:
    """The files of ``split`` ("train" or "test") present in ``root``; a missing test file or no training file is an
    error. Fewer than five training files is allowed (a subset)."""
    names = TRAIN_FILES if split == "train" else (TEST_FILE,)
    paths = [os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))]
    if not paths:
        raise ConfigError(f"CIFAR-10 {split} split missing in {root}: expected {', '.join(names)} "
                          f"(binary version, {BINARY_URL})")
    for path in paths:
        size = os.path.getsize(path)
        if size == 0 or size % RECORD_BYTES:
            raise ConfigError(f"{path} is not a CIFAR-10 binary file ({size} bytes is not a whole number of "
                              f"{RECORD_BYTES}-byte records: truncated or another format): download it again")
    return paths


def read_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8 HWC, labels (N,) int32) of a split, files in order."""
    records = np.concatenate([np.fromfile(p, np.uint8).reshape(-1, RECORD_BYTES) for p in split_files(root, split)])
    labels = records[:, 0].astype(np.int32)
    if labels.max(initial=0) >= len(CLASSES):
        raise ConfigError(f"CIFAR-10 {split} split in {root} has label {labels.max()} (10 classes: 0-9): not CIFAR-10 "
                          "binary data (CIFAR-100's binary records have two label bytes)")
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def class_names(root: str) -> list[str]:
    """The names in ``batches.meta.txt`` when present, else CIFAR-10's."""
    path = os.path.join(root, META_FILE)
    if os.path.isfile(path):
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(names) == len(CLASSES):
            return names
    return list(CLASSES)


def count(root: str, split: str) -> int:
    return sum(os.path.getsize(p) // RECORD_BYTES for p in split_files(root, split))


def write_split(root: str, split: str, images: np.ndarray, labels, files: int = 1) -> list[str]:
    """Write (N, 32, 32, 3) uint8 images and their labels as CIFAR-10 binary files (train: over ``files`` of the
    five batch files). For tests and for converting other small data sets to this format."""
    images = np.asarray(images, np.uint8)
    if images.shape[1:] != (SIDE, SIDE, 3):
        raise ValueError(f"CIFAR-10 images are 32x32x3, got {images.shape[1:]}")
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None],
                              images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    os.makedirs(root, exist_ok=True)
    names = TRAIN_FILES[:files] if split == "train" else (TEST_FILE,)
    paths = []
    for name, part in zip(names, np.array_split(records, len(names))):
        path = os.path.join(root, name)
        part.tofile(path)
        paths.append(path)
    return paths


def train_transforms(image_size: int, crop_scale, crop_ratio, hflip: float, mean, std) -> list:
    """Random resized crop (seed 000's augmentation), flip, normalise, HWC->CHW, on decoded 32x32 arrays."""
    from mindspore.dataset import vision

    ops = [vision.RandomResizedCrop(image_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio))]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=hflip))
    return ops + [vision.Normalize(mean=list(mean), std=list(std)), vision.HWC2CHW()]


def eval_transforms(image_size: int, mean, std) -> list:
    from mindspore.dataset import vision

    ops = [vision.Resize(image_size)] if image_size != SIDE else []
    return ops + [vision.Normalize(mean=list(mean), std=list(std)), vision.HWC2CHW()]


def train_dataset(root: str, cfg, epoch: int, rank: int = 0, world: int = 1, skip: int = 0, arrays=None):
    """Epoch ``epoch``'s training batches of the CIFAR-10 training split for this rank (see data.train_dataset).
    ``arrays``: the split as read_split returns it, to read the files once per run rather than once per epoch."""
    from ms_vit.data.augment import extra_train_ops
    from ms_vit.models.complexity import batching
    from ms_vit.data.folder import batch_mixer, default_workers, epoch_indices, epoch_seed

    indices = epoch_indices(count(root, "train"), cfg, epoch, rank, world, where=root)
    before, after = extra_train_ops(cfg)
    ops = train_transforms(cfg.image_size, cfg.crop_scale, cfg.crop_ratio, cfg.hflip, cfg.mean, cfg.std)
    transforms = ops[:-2] + list(before) + ops[-2:] + list(after)  # the extra ops around Normalize, HWC2CHW
    micro = batching(cfg.section("data"), world).micro_batch
    return dataset(root, "train", transforms, micro, sampler_indices=indices[skip:],
                   drop_remainder=cfg.drop_remainder, num_workers=cfg.num_workers or default_workers(world),
                   seed=epoch_seed(cfg.seed, epoch), arrays=arrays,
                   per_batch_map=batch_mixer(cfg.section("augment"), cfg.label_smoothing, cfg.seed, len(CLASSES),
                                             epoch, rank, skip // micro))


def dataset(root: str, split: str, transforms: list, batch_size: int, *, sampler_indices=None,
            drop_remainder: bool = False, num_workers: int = 1, seed: int = 0, arrays=None, per_batch_map=None):
    """Batches of (image, label int32) from a split: in file order, or the samples ``sampler_indices`` names."""
    import mindspore.dataset as ds

    images, labels = arrays if arrays is not None else read_split(root, split)
    ds.config.set_seed(seed)
    kwargs = {"sampler": ds.SubsetSampler(sampler_indices.tolist())} if sampler_indices is not None else {"shuffle": False}
    data = ds.NumpySlicesDataset({"image": images, "label": labels}, **kwargs)
    data = data.map(operations=transforms, input_columns="image", num_parallel_workers=num_workers)
    from ms_vit.data.folder import batched

    return batched(data, batch_size, drop_remainder, per_batch_map)
