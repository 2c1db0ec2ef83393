"""Image folders and the CelebA layout for ``flowcs data inspect``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ...errors import DataError
from .core import MAX_FILE_LINES, Report, _run, _shapes, register

# ----------------------------------------------------------------------------- images


def _is_image(path: Path) -> bool:
    from ..images import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


@register("image folder", _is_image)
def _check_images(files: list[Path], folder: Path | None, report: Report) -> None:
    from ..images import read_rgb

    if folder is not None:
        from ..images import list_images

        files = list_images(folder)  # the loader's own listing (same suffixes, same order)
    first: tuple[Path, tuple[int, int]] | None = None
    sizes: Counter = Counter()
    lo, hi, n = 255, 0, 0
    for f in files:
        try:
            img = read_rgb(f)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        n += 1
        size = img.shape[:2]
        sizes[f"{size[0]}x{size[1]}"] += 1
        lo, hi = min(lo, int(img.min())), max(hi, int(img.max()))
        if first is None:
            first = (f, size)
        elif size != first[1] and folder is not None:
            report.problems.append(f"{f}: image is {size[0]}x{size[1]} but {first[0].name} is "
                                   f"{first[1][0]}x{first[1][1]} (mixed image sizes in {folder})")
    if n:
        report.summary.append(f"{n} RGB image(s), dtype uint8, size {_shapes(sizes)}, values {lo}..{hi}")


CELEBA_IMAGES = "img_align_celeba"


@register("CelebA folder", lambda folder: (folder / CELEBA_IMAGES).is_dir(), folder=True)
def _check_celeba(_files: list[Path], folder: Path | None, report: Report) -> None:
    from ..faces import CELEBA_PARTITION, read_partition

    assert folder is not None
    images = folder / CELEBA_IMAGES
    part_path = folder / CELEBA_PARTITION
    try:
        partition = read_partition(part_path)
    except DataError as exc:
        report.problems.append(str(exc))
        partition = {}
    if partition:
        counts = Counter(partition.values())
        report.summary.append(f"{CELEBA_PARTITION}: {len(partition)} images (train {counts[0]}, "
                              f"val {counts[1]}, test {counts[2]})")
        missing = sorted(n for n in partition if not (images / n).is_file())
        for name in missing[:MAX_FILE_LINES]:
            report.problems.append(f"{images / name}: listed in {CELEBA_PARTITION} but missing")
        if len(missing) > MAX_FILE_LINES:
            report.problems.append(f"{images}: {len(missing) - MAX_FILE_LINES} more listed images missing")
    sub = Report(images)
    _run(_check_images, [], images, sub)
    report.summary.extend(f"{CELEBA_IMAGES}/: {s}" for s in sub.summary)
    report.problems.extend(sub.problems)
