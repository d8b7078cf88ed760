"""Class labels: the built-in ImageNet-1k table, the ILSVRC2012 devkit's meta.mat, and checkpoint class names."""

from __future__ import annotations

import functools
import os

from ms_vit.errors import ConfigError

TABLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "imagenet1k_classes.tsv")


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((wnid, names), ...) of the 1000 ImageNet-1k classes in index order (sorted WordNet ids)."""
    with open(TABLE, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    return tuple((wnid, names) for _, wnid, names in rows)


def imagenet_labels() -> list[str]:
    """The first name of each ImageNet-1k class: index 236 is 'Doberman'."""
    return [names.split(", ")[0] for _, names in imagenet_classes()]


def imagenet_index() -> dict[str, int]:
    """{WordNet id: class index} for ImageNet-1k."""
    return {wnid: i for i, (wnid, _) in enumerate(imagenet_classes())}


def labels_from_meta_mat(path: str) -> list[str]:
    """Class names from the ILSVRC2012 devkit's ``data/meta.mat``, as the MindSpore tutorial reads it.

    The leaf synsets (``num_children == 0``) sorted by WordNet id give the class indices; a class is named by the first
    of its comma-separated words.
    """
    from scipy import io

    if not os.path.isfile(path):
        raise ConfigError(f"meta.mat file {path} does not exist: give the devkit's data/meta.mat")
    try:
        synsets = io.loadmat(path, squeeze_me=True)["synsets"]
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise ConfigError(f"{path} is not the ILSVRC2012 devkit's meta.mat ({type(err).__name__}): "
                          "give ILSVRC2012_devkit_t12/data/meta.mat") from err
    leaves = sorted((str(s["WNID"]), str(s["words"])) for s in synsets if int(s["num_children"]) == 0)
    return [words.split(", ")[0] for _, words in leaves]


def resolve_labels(num_classes: int, class_names=None, meta_mat: str | None = None) -> list[str]:
    """Labels by priority: checkpoint class names, else meta.mat, else ImageNet-1k for 1000 classes, else indices."""
    if class_names:
        return list(class_names)
    if meta_mat:
        labels = labels_from_meta_mat(meta_mat)
    elif num_classes == 1000:
        labels = imagenet_labels()
    else:
        return [str(i) for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ConfigError(f"{meta_mat or 'the label table'} gives {len(labels)} classes, the checkpoint has "
                          f"{num_classes}")
    return labels


def folder_indexing(folders: list[str], num_classes: int, class_names=None, source: str = "") -> dict[str, int]:
    """Map class-folder names to the checkpoint's indices: by its class names, else by ImageNet WordNet id.

    A folder that matches no class of the checkpoint is an error naming it (never re-indexed 0..k-1).
    """
    if class_names:
        index = {name: i for i, name in enumerate(class_names)}
        how = f"the checkpoint's {len(class_names)} class names"
    elif num_classes == 1000:
        index = imagenet_index()
        how = "the ImageNet-1k WordNet ids (n01440764 ...)"
    else:
        index = {str(i): i for i in range(num_classes)}
        how = f"class indices 0..{num_classes - 1} (the checkpoint has no class names)"
    unknown = [f for f in folders if f not in index]
    if unknown:
        hint = " (did you mean the val/ folder inside it?)" if {"train", "val"} & set(unknown) else ""
        raise ConfigError(f"{source}: class folders {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                          f"match none of {how}{hint}")
    return {f: index[f] for f in folders}
