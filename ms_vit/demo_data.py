"""The offline demo data set: coloured shapes drawn with OpenCV, written as an ordinary ImageFolder."""

from __future__ import annotations

import math
import os

import numpy as np

SHAPES = ("circle", "cross", "ring", "square", "star", "triangle")


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


def make_shapes_dataset(root: str, train_per_class: int = 500, val_per_class: int = 100, size: int = 64,
                        seed: int = 0) -> str:
    """Write ``root/train/<shape>/*.jpg`` and ``root/val/<shape>/*.jpg`` (6 classes) unless already complete."""
    import cv2

    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for shape in SHAPES:
            folder = os.path.join(root, split, shape)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                cv2.imwrite(os.path.join(folder, f"{shape}_{i:04d}.jpg"), draw_shape(shape, size, rng),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    open(marker, "w").close()
    return root
