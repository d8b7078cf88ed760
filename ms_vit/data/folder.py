"""ImageFolder pipelines: a fixed class list, one file listing, one image decoder (``decode_rgb``), per-sample
deterministic augmentation, and the one eval transform that training, eval and infer share."""

from __future__ import annotations

import os

import numpy as np

from ms_vit.models.complexity import batching
from ms_vit.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def class_folders(root: str) -> list[str]:
    """Sorted names of the visible sub-folders of ``root`` (the ImageFolder class order)."""
    if not os.path.exists(root):
        raise ConfigError(f"data folder {root} does not exist: give --data_dir DIR with train/ and val/ inside")
    if not os.path.isdir(root):
        raise ConfigError(f"data path {root} is a file, not a folder: give the folder holding the class folders")
    return sorted(name for name in os.listdir(root)
                  if not name.startswith(".") and os.path.isdir(os.path.join(root, name)))


def is_image_name(name: str) -> bool:
    """An image file name the loader reads: a known extension in any case; hidden files (``.DS_Store``, macOS
    ``._photo.jpg`` resource forks) never."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_images(folder: str) -> list[str]:
    """The sorted names of the image files directly in ``folder``: the only files the pipelines read.

    Sub-folders are not entered, even one named like an image; every count, exclusion and sample index of a run
    comes from this listing.
    """
    return sorted(f for f in os.listdir(folder) if is_image_name(f) and os.path.isfile(os.path.join(folder, f)))


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

    Indexing by name keeps a val folder with fewer classes on the model's indices (not re-indexed 0..k-1).
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
    """The image files of ``folder`` in sample order: by class index, then file name (``list_images``)."""
    return [os.path.join(folder, name, f) for name in sorted(indexing, key=indexing.get)
            for f in list_images(os.path.join(folder, name))]


def labelled_files(folder: str, indexing: dict) -> tuple[list[str], np.ndarray]:
    """``file_list`` and the int32 label of each file (its class folder's index)."""
    paths, labels = [], []
    for name in sorted(indexing, key=indexing.get):
        found = list_images(os.path.join(folder, name))
        paths += [os.path.join(folder, name, f) for f in found]
        labels += [indexing[name]] * len(found)
    return paths, np.array(labels, np.int32)


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; the message starts with its path (see ``decode_failure``)."""


def decode_rgb(source) -> np.ndarray:
    """Any image (a path, or the file's bytes) as 8-bit RGB (H, W, 3), EXIF orientation applied, transparency
    composited over white; grayscale, palette, 16-bit and CMYK included.

    The one decoder of training, eval and infer, so a model sees the same pixels everywhere. Raises
    ImageDecodeError naming the file when it cannot be read.
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        with Image.open(io.BytesIO(source) if name == "<bytes>" else name) as image:
            image.load()
            # getexif() costs about a tenth of a JPEG's decode and exif_transpose copies even an upright image:
            # neither runs for a JPEG without EXIF, nor for an image without an orientation to apply.
            jpeg_without_exif = image.format in ("JPEG", "MPO") and "exif" not in image.info
            if not jpeg_without_exif and image.getexif().get(0x0112, 1) != 1:
                image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if array.max() > 255 else 255.0
                gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(canvas, rgba)
            if image.mode != "RGB":  # convert copies even an RGB image
                image = image.convert("RGB")
            return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"{name}: cannot be read as an image ({type(err).__name__}: {err})") from err


def _path_of(cell) -> str:
    """A string cell of a MindSpore pipeline (a 0-d NumPy array of str or bytes) as a Python str."""
    value = np.asarray(cell).item()
    return value.decode() if isinstance(value, bytes) else value


def _decode_cell(path) -> np.ndarray:
    """The pipeline's decode op: the file a row names -> uint8 RGB (runs inside ``map``, so SKIP mode applies)."""
    return decode_rgb(_path_of(path))


def crop_box(height: int, width: int, scale, ratio, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect ratio (w/h) in ``ratio``, drawn
    log-uniformly (the Inception crop); after 10 misses, the largest centred crop with a ratio in range."""
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = np.exp(rng.uniform(*log_ratio))
        w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    if width / height < min(ratio):
        w, h = width, min(height, max(1, int(round(width / min(ratio)))))
    elif width / height > max(ratio):
        w, h = min(width, max(1, int(round(height * max(ratio))))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainAugment:
    """Decode, random resized crop, horizontal flip: a file -> uint8 (size, size, 3).

    Each sample's random draws come from its own generator seeded with (key, sample index), so its crop and flip
    are the same whatever the worker count or which samples came before it: a mid-epoch resume that leaves out
    the first samples gives the rest exactly the augmentation of an uninterrupted run.
    """

    def __init__(self, image_size: int, crop_scale, crop_ratio, hflip: float, key=(0,), interpolation="bilinear"):
        self.size, self.scale, self.ratio = image_size, tuple(crop_scale), tuple(crop_ratio)
        self.hflip, self.key, self.interpolation = hflip, [int(k) for k in key], interpolation or "bilinear"

    def __call__(self, path, index) -> np.ndarray:
        import cv2

        image = _decode_cell(path)
        rng = np.random.default_rng([*self.key, int(index)])
        top, left, h, w = crop_box(image.shape[0], image.shape[1], self.scale, self.ratio, rng)
        crop = image[top:top + h, left:left + w]
        if self.interpolation == "bicubic":  # PIL's antialiased bicubic, as timm and HF resize (eval: PILCUBIC)
            from PIL import Image

            crop = np.asarray(Image.fromarray(crop).resize((self.size, self.size), Image.BICUBIC))
        else:  # the tutorial's bilinear without antialiasing, as the eval Resize; same size: a copy
            crop = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        if self.hflip > 0 and rng.random() < self.hflip:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop)


class EpochSampler:
    """Shuffled sample indices that depend only on (seed, epoch), split into equal shards for data parallelism,
    leaving out ``exclude`` (indices of unreadable files).

    With ``labels`` and ``class_weights`` (``class_balance: sampler``) the epoch is instead one weighted draw with
    replacement (``balance.weighted_draw``) of as many images as the epoch has; each process takes its own positions
    of that one draw, as it would of the permutation.

    The order of epoch e is the same whether a run reaches it directly or after a resume.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                 exclude=(), labels=None, class_weights=None):
        self.num_samples, self.seed, self.epoch = num_samples, seed, epoch
        self.shuffle, self.rank, self.world, self.exclude = shuffle, rank, world, set(exclude)
        self.labels, self.class_weights = labels, class_weights

    def _shard(self, order: np.ndarray) -> np.ndarray:
        per_shard = len(order) // self.world
        return order[: per_shard * self.world][self.rank::self.world]

    def indices(self) -> np.ndarray:
        if self.class_weights is not None:
            from ms_vit.data.balance import weighted_draw

            return self._shard(weighted_draw(self.labels, self.class_weights, self.seed, self.epoch, self.exclude))
        valid = np.setdiff1d(np.arange(self.num_samples), np.fromiter(self.exclude, np.int64, len(self.exclude)))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(valid) if self.shuffle else valid
        return self._shard(order)

    def positions(self) -> np.ndarray:
        """Where this process's ``indices`` stand in the epoch's global order (0 .. images - 1)."""
        return self._shard(np.arange(self.num_samples - len(self.exclude)))


def train_transforms(image_size: int, crop_scale, crop_ratio, hflip: float, mean, std, key=(0,),
                     interpolation: str = "bilinear", extra=((), ())) -> list:
    """The tutorial's training augmentation: decode (``decode_rgb``) + random resized crop and flip (per-sample
    seeded, ``TrainAugment``), normalise, HWC->CHW. The first op takes the (path, sample index) columns.

    ``extra``: (ops on the uint8 crop, ops on the normalised CHW image), as ``augment.extra_train_ops`` gives them.
    """
    from mindspore.dataset import vision

    before, after = extra
    return [TrainAugment(image_size, crop_scale, crop_ratio, hflip, key, interpolation), *before,
            vision.Normalize(mean=list(mean), std=list(std)), vision.HWC2CHW(), *after]


def eval_transforms(image_size: int, crop_pct: float, mean, std, decode: bool = True,
                    interpolation: str = "bilinear", square: int | None = None) -> list:
    """Decode (``decode_rgb``; the op takes the path column), resize the short side to image_size / crop_pct (256
    for 224), centre-crop, normalise, HWC->CHW.

    The one eval preprocessing: training's validation, eval.py and infer.py all call this. ``square``: crop a
    square of that side instead (``SquareAroundCentre``: its centre image_size crop is the standard one), from
    which test-time augmentation cuts its crops (``evaluate.tta``).
    """
    from mindspore.dataset import vision

    resize = int(round(image_size / crop_pct))
    ops = [_decode_cell] if decode else []
    # "bicubic" is PIL's antialiased kernel (PILCUBIC, equal to PIL's output), the one timm and HF resize with.
    inter = vision.Inter.PILCUBIC if interpolation == "bicubic" else vision.Inter.BILINEAR
    crop = vision.CenterCrop(image_size) if square is None else SquareAroundCentre(square, image_size)
    return ops + [vision.Resize(resize, inter), crop, vision.Normalize(mean=list(mean), std=list(std)),
                  vision.HWC2CHW()]


class SquareAroundCentre:
    """A (side, side) crop of an HWC image whose own centre (size, size) crop, at offset (side - size) // 2, is
    exactly ``CenterCrop(size)`` of the image (which puts the odd pixel of an odd margin on a side that depends on
    the image's width; a plain ``CenterCrop(side)`` would sometimes put it on the other side)."""

    def __init__(self, side: int, size: int):
        self.side, self.size = side, size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if min(height, width) < self.side:
            raise ValueError(f"image of {height}x{width} is smaller than the {self.side} px square to crop")
        inner = (self.side - self.size) // 2
        top = (height - self.size) // 2 - inner
        left = (width - self.size) // 2 - inner
        return np.ascontiguousarray(image[top:top + self.side, left:left + self.side])


def set_bad_images(policy: str) -> None:
    """"skip": the pipeline drops samples whose decoding fails (decoding happens inside ``map`` for this);
    "fail": the first one stops the run."""
    import mindspore.dataset as ds

    mode = ds.config.ErrorSamplesMode.SKIP if policy == "skip" else ds.config.ErrorSamplesMode.RETURN
    ds.config.set_error_samples_mode(mode)


def image_folder(folder: str, indexing: dict, transforms: list, batch_size: int, *, sampler_indices=None,
                 drop_remainder: bool = False, num_workers: int = 0, with_index: bool = False, per_batch_map=None,
                 keep_index: bool = False, augment_keys=None):
    """Batches of (image, label int32) read from exactly the files ``labelled_files`` lists, in that order or in
    the order ``sampler_indices`` gives; decoding happens inside ``map`` (so SKIP mode drops unreadable files).

    ``with_index``: the first transform gets (path, sample index), the index into the listing; or (path, key) with
    ``augment_keys`` (one per row of ``sampler_indices``: a drawn image repeated in an epoch gets its own crop).
    ``per_batch_map``: a function of (images, labels, batch info) applied to each batch (``mixup.BatchMixer``).
    ``keep_index``: batches are (image, label, index into the listing), so results can be traced to their files.
    """
    import mindspore.dataset as ds

    paths, labels = labelled_files(folder, indexing)
    order = np.arange(len(paths)) if sampler_indices is None else np.asarray(sampler_indices, np.int64)
    if not paths:
        raise ConfigError(f"{folder} holds no images to read: put each class's images in {folder}/<class name>/")
    if not len(order):  # MindSpore cannot build a pipeline over no rows
        raise ConfigError(f"none of the {len(paths)} images of {folder} is left for this process (fewer images than "
                          "processes, or all excluded): add images")
    # The listing itself is the source (not ImageFolderDataset, whose own listing would also read stray files):
    # the sample indices, exclusions and counts all refer to it.
    index = order if augment_keys is None else np.asarray(augment_keys, np.int64)
    columns = {"image": np.array(paths)[order], "label": labels[order], "index": index}
    data = ds.NumpySlicesDataset(columns, shuffle=False)
    workers = num_workers or default_workers()
    data = data.map(operations=transforms, input_columns=["image", "index"] if with_index else ["image"],
                    output_columns=["image"], num_parallel_workers=workers)
    data = data.project(["image", "label", "index"] if keep_index and not with_index else ["image", "label"])
    return batched(data, batch_size, drop_remainder, per_batch_map)


def batched(data, batch_size: int, drop_remainder: bool, per_batch_map=None):
    """``data.batch``, with ``per_batch_map`` over the (image, label) columns when given."""
    if per_batch_map is None:
        return data.batch(batch_size, drop_remainder=drop_remainder)
    return data.batch(batch_size, drop_remainder=drop_remainder, per_batch_map=per_batch_map,
                      input_columns=["image", "label"])


def batch_mixer(aug, smoothing: float, seed: int, num_classes: int, epoch: int, rank: int = 0, first_batch: int = 0):
    """The ``mixup.BatchMixer`` of the augment keys ``aug`` (``config.AugmentKeys``) for epoch ``epoch`` on this
    rank, or None when mixup and cutmix are off."""
    from ms_vit.data.mixup import BatchMixer, mixing

    return BatchMixer(aug, num_classes, smoothing, (seed, rank), epoch, first_batch) if mixing(aug) else None


def count_images(folder: str, indexing: dict) -> int:
    """The number of images the pipelines read from the class folders of ``indexing``."""
    return sum(len(list_images(os.path.join(folder, name))) for name in indexing)


def decode_failure(err: Exception) -> str | None:
    """The file a pipeline error names (the ImageDecodeError of ``decode_rgb`` raised inside ``map``), if any."""
    import re

    match = re.search(r"ImageDecodeError: (.+?): cannot be read as an image", str(err))
    return match.group(1) if match else None


def train_dataset(train_dir: str, indexing: dict, cfg, epoch: int, rank: int = 0, world: int = 1, skip: int = 0,
                  exclude_files=()):
    """Epoch ``epoch``'s training batches for this rank: the order depends only on (seed, epoch), each sample's
    crop and flip only on (seed, epoch, sample index).
    ``skip`` leaves out the first samples of the epoch (already trained on before an interruption);
    ``exclude_files`` the files found unreadable before training. With ``cfg.accum_steps`` > 1 the batches are the
    micro-batches (batch_size / accum_steps per process) and the epoch ends on a whole optimizer step."""
    files, labels = labelled_files(train_dir, indexing)
    exclude_files = set(exclude_files)
    excluded = {i for i, path in enumerate(files) if path in exclude_files}
    indices, positions = epoch_indices(len(files), cfg, epoch, rank, world, excluded, where=train_dir, labels=labels,
                                       with_positions=True)
    # The sampler repeats images within an epoch: each draw's crop and flip are keyed by its position in the
    # epoch's draw (still only (seed, epoch, position): a resume gives the same), not by the image.
    augment_keys = positions[skip:] if _sampling(cfg) else None
    from ms_vit.checkpoint.pretrained_cfg import resolve_preprocess

    from ms_vit.data.augment import extra_train_ops

    prep, _ = resolve_preprocess(cfg.preprocess_overrides())  # fine_tune resolved them; a bare config: ImageNet's
    transforms = train_transforms(cfg.image_size, cfg.crop_scale, cfg.crop_ratio, cfg.hflip, prep["mean"], prep["std"],
                                  key=(cfg.seed, epoch), interpolation=prep["interpolation"],
                                  extra=extra_train_ops(cfg))
    micro = batching(cfg.section("data"), world).micro_batch
    import mindspore.dataset as ds

    ds.config.set_seed(epoch_seed(cfg.seed, epoch))  # the MindSpore random ops of extra_train_ops draw from it
    return image_folder(train_dir, indexing, transforms, micro, sampler_indices=indices[skip:],
                        drop_remainder=cfg.drop_remainder, num_workers=cfg.num_workers or default_workers(world),
                        with_index=True, augment_keys=augment_keys,
                        per_batch_map=batch_mixer(cfg.section("augment"), cfg.label_smoothing, cfg.seed, len(indexing),
                                                  epoch, rank, skip // micro))


def epoch_seed(seed: int, epoch: int) -> int:
    """The pipeline seed of an epoch (CIFAR-10's augmentation): it depends only on (seed, epoch)."""
    return seed * 100_003 + epoch


def _sampling(cfg) -> bool:
    return getattr(cfg, "class_balance", "none") == "sampler"


def epoch_indices(num_samples: int, cfg, epoch: int, rank: int = 0, world: int = 1, exclude=(), where: str = "",
                  labels=None, with_positions: bool = False):
    """This rank's sample order for ``epoch`` (EpochSampler), cut to whole optimizer steps when accumulating.

    ``labels`` (every sample's class): needed by ``class_balance: sampler``, whose weights come from the readable
    samples' class counts. ``with_positions``: (indices, their positions in the epoch's global order).
    """
    n = num_samples - len(exclude)
    # Checked here for drop_remainder only (it would leave no batch at all); fine_tune checks every run's steps.
    plan = batching(cfg.section("data"), world, images=n if cfg.drop_remainder else None, where=where)
    weights = None
    if _sampling(cfg):
        from ms_vit.data.balance import class_counts, class_weights

        if labels is None:
            raise ConfigError(f"class_balance sampler needs the class of every training image of {where or 'the data'}"
                              ": use class_balance none or loss with this data set")
        labels = np.asarray(labels, np.int64)
        keep = np.ones(len(labels), bool)
        keep[list(exclude)] = False
        weights = class_weights(class_counts(labels[keep], int(labels.max()) + 1), cfg.class_balance_weights)
    sampler = EpochSampler(num_samples, cfg.seed, epoch, shuffle=True, rank=rank, world=world, exclude=exclude,
                           labels=labels, class_weights=weights)
    indices, positions = sampler.indices(), sampler.positions()
    if plan.accum_steps > 1:  # a partial optimizer step would leave gradients in the buffers across the epoch's end
        cut = len(indices) // plan.per_rank_batch * plan.per_rank_batch
        indices, positions = indices[:cut], positions[:cut]
    return (indices, positions) if with_positions else indices


def eval_dataset(folder: str, indexing: dict, image_size: int, crop_pct: float, mean, std, batch_size: int,
                 num_workers: int = 0, interpolation: str = "bilinear", sampler_indices=None, keep_index: bool = False,
                 square: int | None = None):
    """Evaluation batches, in file order, every listed image kept (no drop_remainder); ``sampler_indices``: only
    those images (a data-parallel process's shard, ``distributed.shard_indices``); ``keep_index``: a third column,
    each image's index into ``labelled_files``; ``square``: images of that side around the centre crop
    (``eval_transforms``)."""
    return image_folder(folder, indexing, eval_transforms(image_size, crop_pct, mean, std, interpolation=interpolation,
                                                          square=square),
                        batch_size, num_workers=num_workers, sampler_indices=sampler_indices, keep_index=keep_index)
