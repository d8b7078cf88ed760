"""Check an ImageFolder data set before a long run: what would break training, and what would falsify it."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field

from ms_vit.data import folder as data
from ms_vit.download import sha256_of

# First bytes of the image formats the loader's decoder (data.decode_rgb, Pillow) reads.
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"GIF8", "GIF"),
         (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"P5", "PGM"), (b"P6", "PPM"))
UNUSUAL_MODES = {"L": "grayscale", "LA": "grayscale + alpha", "RGBA": "RGBA", "P": "palette", "I;16": "16-bit",
                 "I;16B": "16-bit", "I": "32-bit integer", "F": "float", "CMYK": "CMYK", "1": "1-bit"}
# Problems that break training (unreadable files) or falsify it (val images also in train, val-only classes).
ERRORS = {"zero-byte", "not an image", "corrupt", "truncated", "train/val duplicate", "val class absent from train",
          "empty class folder"}
# Entries the loader never reads (data.list_images leaves them out); notes, not errors.
IGNORED = {"hidden file", "other file", "sub-folder"}


@dataclass
class Finding:
    path: str
    kind: str
    detail: str = ""

    @property
    def is_error(self) -> bool:
        return self.kind in ERRORS


@dataclass
class DataReport:
    root: str
    counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))  # split -> class -> images
    findings: list = field(default_factory=list)

    @property
    def errors(self) -> list:
        return [f for f in self.findings if f.is_error]

    def unreadable(self) -> list:
        return [f for f in self.findings if f.kind in ("zero-byte", "not an image", "corrupt", "truncated")]


def _sniff(path: str) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in MAGIC if head.startswith(magic)), None)


def _inspect(path: str, full: bool, min_size: int) -> list[Finding]:
    """Findings for one file: fast = size and magic bytes; full = a complete decode with Pillow as well."""
    if os.path.getsize(path) == 0:
        return [Finding(path, "zero-byte")]
    if _sniff(path) is None:
        return [Finding(path, "not an image", "its first bytes match no image format")]
    if not full:
        return []
    from PIL import Image

    try:
        with Image.open(path) as image:  # the header only: the stored mode and size
            mode, size = image.mode, image.size
        data.decode_rgb(path)  # the loader's own decode, so "unreadable" means what training would fail on
    except data.ImageDecodeError as err:
        reason = str(err.__cause__ or err).splitlines()[0]
        return [Finding(path, "truncated" if "truncated" in reason else "corrupt", reason)]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return [Finding(path, "corrupt", str(err).splitlines()[0])]
    found = []
    if mode in UNUSUAL_MODES:
        found.append(Finding(path, "unusual mode", UNUSUAL_MODES[mode]))
    if min(size) < min_size:
        found.append(Finding(path, "smaller than the input", f"{size[0]}x{size[1]} < {min_size} px: upsampled"))
    return found


def scan(root: str, image_size: int = 224, full: bool = True) -> DataReport:
    """Inspect ``root`` (with train/ and val/, or a single folder of class folders).

    Full mode decodes every image and hashes every file (train/val duplicates); fast mode, run before every
    training, checks sizes and magic bytes only.
    """
    data.class_folders(root)  # a clear error for a missing path or a file
    splits = [s for s in ("train", "val") if os.path.isdir(os.path.join(root, s))] or [""]
    report = DataReport(root)
    hashes: dict = defaultdict(lambda: defaultdict(list))
    classes = {}
    for split in splits:
        folder = os.path.join(root, split)
        classes[split] = data.class_folders(folder)
        for entry in sorted(os.listdir(folder)):
            if entry.startswith("."):
                report.findings.append(Finding(os.path.join(folder, entry), "hidden file", "ignored by the loader"))
            elif not os.path.isdir(os.path.join(folder, entry)):
                report.findings.append(Finding(os.path.join(folder, entry), "other file",
                                               "not in a class folder: ignored by the loader"))
        for name in classes[split]:
            class_dir = os.path.join(folder, name)
            files = sorted(os.listdir(class_dir))
            images = data.list_images(class_dir)  # the loader's own listing: what is not in it, it never reads
            if not images:
                report.findings.append(Finding(class_dir, "empty class folder", "no images"))
            listed = set(images)
            for f in files:
                path = os.path.join(class_dir, f)
                if f.startswith("."):
                    report.findings.append(Finding(path, "hidden file", "ignored by the loader"))
                elif os.path.isdir(path):
                    report.findings.append(Finding(path, "sub-folder", "ignored by the loader: images must lie "
                                                                       "directly in the class folder"))
                elif f not in listed:
                    report.findings.append(Finding(path, "other file", "not an image extension: ignored"))
            for f in images:
                path = os.path.join(class_dir, f)
                report.counts[split or "data"][name] += 1
                report.findings.extend(_inspect(path, full, image_size))
                if full and len(splits) == 2:
                    hashes[sha256_of(path)][split].append(path)
    for copies in hashes.values():
        if "train" in copies and "val" in copies:
            for path in copies["val"]:
                report.findings.append(Finding(path, "train/val duplicate", f"same bytes as {copies['train'][0]}"))
    if len(splits) == 2:
        for name in sorted(set(classes["val"]) - set(classes["train"])):
            report.findings.append(Finding(os.path.join(root, "val", name), "val class absent from train"))
    return report


def balance_line(report: DataReport, suggest_ratio: float | None = None) -> str:
    """The training split's largest/smallest class image-count ratio, suggesting ``class_balance`` from
    ``suggest_ratio`` (default ``balance.SUGGEST_RATIO``) on; "" with fewer than two classes holding images."""
    from ms_vit.data.balance import SUGGEST_RATIO

    split = "train" if "train" in report.counts else "data"
    counts = {name: n for name, n in report.counts.get(split, {}).items() if n > 0}
    if len(counts) < 2:
        return ""
    largest, smallest = max(counts, key=lambda k: (counts[k], k)), min(counts, key=lambda k: (counts[k], k))
    ratio = counts[largest] / counts[smallest]
    line = (f"class balance of {split}/: largest/smallest class {ratio:.1f}:1 ({largest} {counts[largest]} images, "
            f"{smallest} {counts[smallest]})")
    if ratio >= (SUGGEST_RATIO if suggest_ratio is None else suggest_ratio):
        line += ("; imbalanced: train with class_balance: sampler (or loss), e.g. --class_balance sampler, and "
                 "compare macro-F1")
    return line


def summary_lines(report: DataReport, limit: int = 10, suggest_ratio: float | None = None) -> list[str]:
    """A table of images and problems per split and class, the training classes' balance (``balance_line``), then
    the problems, most serious first."""
    bad = defaultdict(int)
    for f in report.findings:
        parts = os.path.relpath(f.path, report.root).split(os.sep)
        bad[(parts[0], parts[1] if len(parts) > 2 else "")] += f.is_error
    lines = [f"{'split':<6} {'class':<30} {'images':>7} {'errors':>7}"]
    for split, per_class in report.counts.items():
        for name, count in sorted(per_class.items()):
            lines.append(f"{split:<6} {name[:30]:<30} {count:>7} {bad.get((split, name), 0):>7}")
    balance = balance_line(report, suggest_ratio)
    if balance:
        lines.append(balance)
    by_kind = defaultdict(list)
    for f in report.findings:
        by_kind[f.kind].append(f)
    for kind in sorted(by_kind, key=lambda k: (k not in ERRORS, k)):
        items = by_kind[kind]
        label = "error" if kind in ERRORS else "note"
        lines.append(f"{label}: {len(items)} x {kind}")
        for f in items[:limit]:
            lines.append(f"    {f.path}" + (f" ({f.detail})" if f.detail else ""))
        if len(items) > limit:
            lines.append(f"    ... {len(items) - limit} more")
    return lines


def quarantine(report: DataReport, dest: str) -> list[tuple[str, str]]:
    """Move every file with an error (never a folder) to ``dest``, keeping its path relative to the data root.
    Nothing is deleted. Returns [(from, to)]."""
    moved = []
    for f in report.errors:
        if not os.path.isfile(f.path):
            continue
        target = os.path.join(dest, os.path.relpath(f.path, report.root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            raise FileExistsError(f"{target} already exists in the quarantine folder: choose another --quarantine")
        shutil.move(f.path, target)
        moved.append((f.path, target))
    return moved
