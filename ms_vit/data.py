"""ImageFolder pipelines: a fixed class list, per-epoch deterministic shuffling and augmentation, and the one
eval transform that training, eval and infer share."""

from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def class_folders(root: str) -> list[str]:
    """Sorted names of the visible sub-folders of ``root`` (the ImageFolder class order)."""
    if not os.path.exists(root):
        raise ConfigError(f"data folder {root} does not exist: give --data_dir DIR with train/ and val/ inside")
    if not os.path.isdir(root):
        raise ConfigError(f"data path {root} is a file, not a folder: give the folder holding the class folders")
    return sorted(name for name in os.listdir(root)
                  if not name.startswith(".") and os.path.isdir(os.path.join(root, name)))


def list_images(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def train_classes(train_dir: str) -> list[str]:
    """The class list of a run: the sorted class folders of ``train/``, each holding at least one image."""
    names = class_folders(train_dir)
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise ConfigError(f"{train_dir} needs at least 2 class folders (found {found}): put each class's images in "
                          f"{train_dir}/<class name>/")
    empty = [n for n in names if not list_images(os.path.join(train_dir, n))]
    if empty:
        raise ConfigError(f"class folder {os.path.join(train_dir, empty[0])} holds no images "
                          f"({len(empty)} empty in all): add images or remove the folder")
    return names


def class_indexing(folder: str, class_names: list[str]) -> dict[str, int]:
    """{folder name: index in class_names} for every class folder of ``folder``; a folder not in the list is an error.

    MindSpore's ImageFolderDataset would otherwise re-index a folder with fewer classes as 0..k-1, or silently drop
    the folders missing from a partial class_indexing.
    """
    index = {name: i for i, name in enumerate(class_names)}
    present = class_folders(folder)
    unknown = [n for n in present if n not in index]
    if unknown:
        raise ConfigError(f"{folder} has class folders that are not among the model's {len(class_names)} classes: "
                          f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; rename or remove them")
    if not present:
        raise ConfigError(f"{folder} holds no class folders: put each class's images in {folder}/<class name>/")
    return {n: index[n] for n in present}


def default_workers(world_size: int = 1) -> int:
    return max(1, min(8, (os.cpu_count() or 1) // max(world_size, 1)))


def file_list(folder: str, indexing: dict) -> list[str]:
    """The image files of ``folder`` in ImageFolderDataset's sample order: by class index, then file name."""
    return [os.path.join(folder, name, f) for name in sorted(indexing, key=indexing.get)
            for f in list_images(os.path.join(folder, name))]


class EpochSampler:
    """Shuffled sample indices that depend only on (seed, epoch), split into equal shards for data parallelism,
    leaving out ``exclude`` (indices of unreadable files).

    The order of epoch e is the same whether a run reaches it directly or after a resume.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                 exclude=()):
        self.num_samples, self.seed, self.epoch = num_samples, seed, epoch
        self.shuffle, self.rank, self.world, self.exclude = shuffle, rank, world, set(exclude)

    def indices(self) -> np.ndarray:
        valid = np.setdiff1d(np.arange(self.num_samples), np.fromiter(self.exclude, np.int64, len(self.exclude)))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(valid) if self.shuffle else valid
        per_shard = len(valid) // self.world
        return order[: per_shard * self.world][self.rank::self.world]


def train_transforms(image_size: int, crop_scale, crop_ratio, hflip: float, mean, std) -> list:
    """The tutorial's training augmentation: decode + random resized crop, flip, normalise, HWC->CHW."""
    from mindspore.dataset import vision

    ops = [vision.RandomCropDecodeResize(image_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio))]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=hflip))
    return ops + [vision.Normalize(mean=list(mean), std=list(std)), vision.HWC2CHW()]


def eval_transforms(image_size: int, crop_pct: float, mean, std, decode: bool = True) -> list:
    """Decode, resize the short side to image_size / crop_pct (256 for 224), centre-crop, normalise, HWC->CHW.

    The one eval preprocessing: training's validation, eval.py and infer.py all call this.
    """
    from mindspore.dataset import vision

    resize = int(round(image_size / crop_pct))
    ops = [vision.Decode()] if decode else []
    return ops + [vision.Resize(resize), vision.CenterCrop(image_size), vision.Normalize(mean=list(mean), std=list(std)),
                  vision.HWC2CHW()]


def set_bad_images(policy: str) -> None:
    """"skip": the pipeline drops samples whose decoding fails (decoding happens inside ``map`` for this);
    "fail": the first one stops the run."""
    import mindspore.dataset as ds

    mode = ds.config.ErrorSamplesMode.SKIP if policy == "skip" else ds.config.ErrorSamplesMode.RETURN
    ds.config.set_error_samples_mode(mode)


def image_folder(folder: str, indexing: dict, transforms: list, batch_size: int, *, sampler_indices=None,
                 drop_remainder: bool = False, num_workers: int = 0, seed: int = 0):
    """An ImageFolderDataset with a fixed class_indexing, decoding inside ``map``, batched; labels int32."""
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore.dataset import transforms as ds_transforms

    ds.config.set_seed(seed)  # seeds the random augmentations of the pipeline built next
    kwargs = {"sampler": ds.SubsetSampler(sampler_indices.tolist())} if sampler_indices is not None else {"shuffle": False}
    data = ds.ImageFolderDataset(folder, class_indexing=indexing, decode=False, **kwargs)
    workers = num_workers or default_workers()
    data = data.map(operations=transforms, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=ds_transforms.TypeCast(ms.int32), input_columns="label")
    return data.batch(batch_size, drop_remainder=drop_remainder)


def count_images(folder: str, indexing: dict) -> int:
    return sum(len(list_images(os.path.join(folder, name))) for name in indexing)


def decode_failure(err: Exception) -> str | None:
    """The file a MindSpore pipeline error names ("The corresponding data file is: PATH."), if any."""
    import re

    match = re.search(r"data file is: (.+?)\.?(?:\s|$)", str(err))
    return match.group(1) if match else None


def train_dataset(train_dir: str, indexing: dict, cfg, epoch: int, rank: int = 0, world: int = 1, skip: int = 0,
                  exclude_files=()):
    """Epoch ``epoch``'s training batches for this rank: order and augmentation depend only on (seed, epoch).
    ``skip`` leaves out the first samples of the epoch (already trained on before an interruption);
    ``exclude_files`` the files found unreadable before training. With ``cfg.accum_steps`` > 1 the batches are the
    micro-batches (batch_size / accum_steps per process) and the epoch ends on a whole optimizer step."""
    files = file_list(train_dir, indexing)
    exclude_files = set(exclude_files)
    excluded = {i for i, path in enumerate(files) if path in exclude_files}
    indices = epoch_indices(len(files), cfg, epoch, rank, world, excluded, where=train_dir)
    transforms = train_transforms(cfg.image_size, cfg.crop_scale, cfg.crop_ratio, cfg.hflip, cfg.mean, cfg.std)
    return image_folder(train_dir, indexing, transforms, cfg.batch_size // world // max(cfg.accum_steps, 1),
                        sampler_indices=indices[skip:], drop_remainder=cfg.drop_remainder,
                        num_workers=cfg.num_workers or default_workers(world), seed=epoch_seed(cfg, epoch))


def epoch_seed(cfg, epoch: int) -> int:
    """The pipeline seed of an epoch: its augmentation depends only on (seed, epoch)."""
    return cfg.seed * 100_003 + epoch


def epoch_indices(num_samples: int, cfg, epoch: int, rank: int = 0, world: int = 1, exclude=(), where: str = "") -> np.ndarray:
    """This rank's sample order for ``epoch`` (EpochSampler), cut to whole optimizer steps when accumulating."""
    per_rank_batch = cfg.batch_size // world
    n = num_samples - len(exclude)
    if cfg.drop_remainder and n // world < per_rank_batch:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {n} training images in {where} "
                          f"with drop_remainder: lower --batch_size or add images")
    indices = EpochSampler(num_samples, cfg.seed, epoch, shuffle=True, rank=rank, world=world, exclude=exclude).indices()
    if cfg.accum_steps > 1:  # a partial optimizer step would leave gradients in the buffers across the epoch's end
        indices = indices[: len(indices) // per_rank_batch * per_rank_batch]
    return indices


def eval_dataset(folder: str, indexing: dict, image_size: int, crop_pct: float, mean, std, batch_size: int,
                 num_workers: int = 0):
    """Evaluation batches, in file order, every image kept (no drop_remainder)."""
    return image_folder(folder, indexing, eval_transforms(image_size, crop_pct, mean, std), batch_size,
                        num_workers=num_workers)
