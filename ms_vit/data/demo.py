"""The offline demo data set: coloured shapes drawn with OpenCV, written as an ordinary ImageFolder."""

from __future__ import annotations

import math
import os
import re
import shutil

import numpy as np

from ms_vit.errors import ConfigError

SHAPES = ("circle", "cross", "ring", "square", "star", "triangle")
MARKER = ".complete"  # written last: a demo folder without it was interrupted


def _polygon(center, radius, corners, angle, inner=None):
    points = []
    for i in range(corners * (2 if inner else 1)):
        r = inner if inner and i % 2 else radius
        a = angle + i * math.pi / (corners if inner else corners / 2)
        points.append((center[0] + r * math.cos(a), center[1] + r * math.sin(a)))
    return np.array(points, np.int32)


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR image of ``shape`` at a random place, size, angle and colour on a noisy background."""
    import cv2

    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    radius = rng.uniform(0.22, 0.34) * size
    margin = int(radius) + 2
    center = (int(rng.integers(margin, size - margin)), int(rng.integers(margin, size - margin)))
    angle = rng.uniform(0, 2 * math.pi)
    thickness = max(2, size // 16)
    if shape == "circle":
        cv2.circle(image, center, int(radius), colour, -1, cv2.LINE_AA)
    elif shape == "ring":
        cv2.circle(image, center, int(radius), colour, thickness, cv2.LINE_AA)
    elif shape == "square":
        cv2.fillPoly(image, [_polygon(center, radius, 4, angle)], colour, cv2.LINE_AA)
    elif shape == "triangle":
        cv2.fillPoly(image, [_polygon(center, radius, 3, angle)], colour, cv2.LINE_AA)
    elif shape == "star":
        cv2.fillPoly(image, [_polygon(center, radius, 5, angle, inner=radius * 0.45)], colour, cv2.LINE_AA)
    elif shape == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            cv2.line(image, (int(center[0] - dx), int(center[1] - dy)), (int(center[0] + dx), int(center[1] + dy)),
                     colour, thickness + 1, cv2.LINE_AA)
    else:
        raise ValueError(f"unknown shape {shape}")
    return image


def is_complete(root: str) -> bool:
    """Whether ``root`` holds a whole generated demo data set."""
    return os.path.isfile(os.path.join(root, MARKER))


def _generated(rel: str) -> bool:
    parts = rel.split(os.sep)
    return (len(parts) == 3 and parts[0] in ("train", "val") and parts[1] in SHAPES
            and re.fullmatch(rf"{parts[1]}_\d{{4}}\.jpg", parts[2]) is not None)


def is_partial(root: str) -> bool:
    """Whether ``root`` is an interrupted generation: an empty folder, or only files the generator writes, without
    the completion marker. Anything else in it is someone's data, never to be removed."""
    if not os.path.isdir(root) or is_complete(root):
        return False
    for folder, _, files in os.walk(root):
        if any(not _generated(os.path.relpath(os.path.join(folder, f), root)) for f in files):
            return False
    return True


def needs_generation(root: str) -> bool:
    """Whether the demo data set must be (re)generated in ``root``: missing, empty or half-written."""
    return not os.path.exists(root) or is_partial(root)


def _remove_stale_partials(parent: str, base: str) -> None:
    """Temporary folders of generations whose process is gone (killed mid-way); a live one is left alone."""
    for name in os.listdir(parent):
        match = re.fullmatch(rf"\.{re.escape(base)}\.partial-(\d+)", name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def make_shapes_dataset(root: str, train_per_class: int = 500, val_per_class: int = 100, size: int = 64,
                        seed: int = 0) -> str:
    """Write ``root/train/<shape>/*.jpg`` and ``root/val/<shape>/*.jpg`` (6 classes) unless already complete.

    The images go to a temporary folder beside ``root``, renamed into place when whole, so an interrupted run
    never leaves a partial data set to train on; a partial folder from before (no completion marker) is replaced.
    """
    import cv2

    if is_complete(root):
        return root
    if os.path.exists(root) and not is_partial(root):
        raise ConfigError(f"{root} is not a complete demo data set and holds other files: give --data_dir an empty "
                          "or missing folder for the demo, or turn demo_data off to train on it")
    parent, base = os.path.split(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_partials(parent, base)
    staging = os.path.join(parent, f".{base}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        rng = np.random.default_rng(seed)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for shape in SHAPES:
                folder = os.path.join(staging, split, shape)
                os.makedirs(folder, exist_ok=True)
                for i in range(count):
                    path = os.path.join(folder, f"{shape}_{i:04d}.jpg")
                    if not cv2.imwrite(path, draw_shape(shape, size, rng), [cv2.IMWRITE_JPEG_QUALITY, 95]):
                        raise ConfigError(f"cannot write {path}: check that {parent} is writable and has space")
        open(os.path.join(staging, MARKER), "w").close()
        if is_complete(root):  # another process (a data-parallel rank) finished first: same images
            return root
        if os.path.exists(root):
            shutil.rmtree(root)  # a partial generation (checked above)
        try:
            os.rename(staging, root)
        except OSError:
            if not is_complete(root):  # lost the race to another process: fine only if it finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
