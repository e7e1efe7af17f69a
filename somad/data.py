"""Datasets, images and masks: the MVTec AD folder layout, plain image folders and robust image decoding.

Every image comes back as an H x W x 3 RGB ``uint8`` array and every mask as an H x W ``bool`` array,
whatever the file holds (grayscale, alpha, palette, 16-bit or float). Problems raise
:class:`~somad.errors.DataError` (or its subclass :class:`~somad.errors.ImageReadError`) naming the file;
loaders never return ``None``.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import PIL.Image

from somad.errors import DataError, ImageReadError
from somad.stderr import captured_stderr

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MAX_IMAGE_PIXELS: int = 80_000_000
MAX_FILE_BYTES: int = 512 * 1024 * 1024

GOOD = "good"
UNLABELLED = "unlabelled"
_DECODE_FAILED = "cannot decode image (corrupt, truncated or unsupported format)"
# OpenCV's own pixel-count guard, for the formats whose header Pillow cannot read (read at the first decode).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and, for a defective test image, its ground-truth mask when one exists."""

    path: Path
    split: Literal["train", "test"]
    defect_type: str
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        """0 for a good image, 1 for a defective one, -1 when the image is unlabelled."""
        if self.defect_type == GOOD:
            return 0
        return -1 if self.defect_type == UNLABELLED else 1


@dataclass
class Dataset:
    """A category: good training images and a (possibly empty) test set."""

    name: str
    root: Path
    train: list[Sample]
    test: list[Sample]
    layout: Literal["mvtec", "folder", "inspection"]

    @property
    def defect_types(self) -> list[str]:
        """Sorted defect types of the test set (neither "good" nor "unlabelled")."""
        return sorted({s.defect_type for s in self.test if s.label == 1})

    @property
    def has_masks(self) -> bool:
        """True when the test set has defective images and every one of them has a mask."""
        defective = [s for s in self.test if s.label == 1]
        return bool(defective) and all(s.mask_path is not None for s in defective)

    @property
    def has_labels(self) -> bool:
        """True when every test image is labelled and both good and defective images are present."""
        labels = {s.label for s in self.test}
        return labels == {0, 1}


def _is_image(path: Path) -> bool:
    """An image file by its name; a broken link counts, so that reading it reports it instead of skipping it."""
    named = path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    return named and (path.is_file() or (path.is_symlink() and not path.exists()))


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (with ``recursive``, in its sub-folders too), sorted by name, then path;
    hidden files and folders and non-image files are skipped. A missing folder has none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if not recursive:
        return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)
    found = [
        p
        for p in folder.rglob("*")
        if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named by ``inputs``: files as they are, folders by every image inside them (recursively),
    ``.txt`` files by the paths they list, one a line (relative ones from the list's folder)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.suffix.lower() == ".txt" and p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise DataError(p, f"cannot read the list ({err})") from None
            listed = [p.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
            if not listed:
                raise DataError(p, "lists no image")
            paths += listed
        elif p.is_dir():
            found = list_images(p, recursive=True)
            if not found:
                raise DataError(p, "no images in this folder")
            paths += found
        elif p.exists():
            paths.append(p)
        elif p.is_symlink():
            raise DataError(p, "broken link (the file it points to does not exist)")
        else:
            raise DataError(p, "file not found")
    return paths


def typed_images(folder: str | Path) -> list[Sample]:
    """The images of a folder as unlabelled-or-typed test samples: those in each sub-folder typed by its name,
    then those lying in the folder itself (type ``unlabelled``)."""
    folder = _existing_folder(folder)
    typed = [Sample(p, "test", sub.name) for sub in _subfolders(folder) for p in list_images(sub)]
    loose = [Sample(p, "test", UNLABELLED) for p in list_images(folder)]
    if not loose and not typed:
        raise DataError(folder, "no test images (looked in the folder and its sub-folders)")
    return typed + loose


def _subfolders(folder: Path) -> list[Path]:
    found = (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(found, key=lambda p: p.name)


def _existing_folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(folder, "does not exist")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    return folder


def is_mvtec_category(path: str | Path) -> bool:
    """True when ``path`` has a ``train/good`` folder holding at least one image."""
    return bool(list_images(Path(path).expanduser() / "train" / GOOD))


def find_categories(root: str | Path) -> list[Path]:
    """``root`` itself when it is a category, else its category sub-folders, sorted by name."""
    folder = _existing_folder(root)
    if is_mvtec_category(folder):
        return [folder]
    found = [p for p in _subfolders(folder) if is_mvtec_category(p)]
    if not found:
        raise DataError(folder, "no category found (expected <category>/train/good with images)")
    return found


def _find_mask(gt_folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for suffix in (".png", *sorted(IMAGE_SUFFIXES - {".png"})):
            candidate = gt_folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _mvtec_test(folder: Path) -> list[Sample]:
    test_root, gt_root = folder / "test", folder / "ground_truth"
    if not test_root.is_dir():
        return []
    samples: list[Sample] = []
    for type_folder in _subfolders(test_root):
        kind = type_folder.name
        for image in list_images(type_folder):
            mask = None if kind == GOOD else _find_mask(gt_root / kind, image.stem)
            samples.append(Sample(image, "test", kind, mask))
    return samples


def open_dataset(path: str | Path, test_path: str | Path | None = None) -> Dataset:
    """Open an MVTec AD category or a plain folder of good images.

    A folder with a ``train`` sub-folder is read as MVTec AD (``train/good``, ``test/<type>``,
    ``ground_truth/<type>/<stem>_mask.png``); any other folder's images are the training images.
    ``test_path``, when given, replaces the test set: its sub-folders are defect types ("good" holds good
    images) and images lying directly in it are unlabelled.
    """
    folder = _existing_folder(path)
    if (folder / "train").is_dir():
        layout: Literal["mvtec", "folder"] = "mvtec"
        train_folder = folder / "train" / GOOD
        test = [] if test_path is not None else _mvtec_test(folder)
    else:
        layout, train_folder, test = "folder", folder, []
    train = [Sample(p, "train", GOOD) for p in list_images(train_folder)]
    if not train:
        raise DataError(folder, f"no training images (looked in {train_folder})")
    if test_path is not None:
        test = typed_images(test_path)
    return Dataset(folder.name, folder, train, test, layout)


def open_inspection(path: str | Path) -> Dataset:
    """A folder of new parts to inspect with a fitted model: every image in it and its sub-folders is an
    unlabelled test image, none a training image. An empty folder is allowed (a watched folder fills later)."""
    folder = _existing_folder(path)
    test = [Sample(p, "test", UNLABELLED) for p in list_images(folder, recursive=True)]
    return Dataset(folder.name, folder, [], test, "inspection")


_ORIENTATION_TAG = 0x0112
#: Library messages on stderr that mean the decoded pixels are incomplete.
_DAMAGE_SIGNS = ("corrupt", "premature end", "truncated", "read error", "crc error", "error")


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            path,
            f"image too large ({width} x {height} = {width * height:,} pixels; "
            f"the limit is {MAX_IMAGE_PIXELS:,})",
        )


def _probe(path: Path, data: np.ndarray) -> int:
    """Check the pixel count from the file's header, before anything is decoded; return its EXIF orientation
    (1 to 8; 1 when it has none). Formats Pillow does not know are left to OpenCV's own pixel limit."""
    try:
        with warnings.catch_warnings():  # size warnings and damaged EXIF: our checks and the decoder decide
            warnings.simplefilter("ignore")
            with PIL.Image.open(io.BytesIO(data.data)) as header:
                width, height = header.size
                orientation = header.getexif().get(_ORIENTATION_TAG, 1)
    except PIL.Image.DecompressionBombError:
        raise ImageReadError(path, f"image too large (over {MAX_IMAGE_PIXELS:,} pixels)") from None
    except Exception:  # unknown or damaged header: the decoder decides
        return 1
    _check_pixels(path, width, height)
    return orientation if orientation in range(1, 9) else 1


def _oriented(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` turned upright by its EXIF orientation (TIFF/EXIF tag 274: 2 mirror, 3 rotate 180,
    4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 anticlockwise)."""
    if orientation in (2, 3, 4):
        image = image[:, ::-1] if orientation == 2 else image[::-1, ::-1] if orientation == 3 else image[::-1]
    elif orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose
        if orientation == 6:
            image = image[:, ::-1]
        elif orientation == 7:
            image = image[::-1, ::-1]
        elif orientation == 8:
            image = image[::-1]
    return np.ascontiguousarray(image)


def _decode(path: str | Path) -> tuple[Path, np.ndarray]:
    """Read and decode a file as stored (any depth and channel count, turned upright), with size guards."""
    file = Path(path).expanduser()
    if file.is_symlink() and not file.exists():
        raise ImageReadError(file, "broken link (the file it points to does not exist)")
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(file, "file not found") from None
    except OSError as exc:
        raise ImageReadError(file, f"cannot read file ({exc.strerror or exc})") from None
    if not file.is_file():
        raise ImageReadError(file, "is not a file")
    if size == 0:
        raise ImageReadError(file, "empty file")
    if size > MAX_FILE_BYTES:
        limit = MAX_FILE_BYTES >> 20
        raise ImageReadError(file, f"file too large ({size / 2**20:.0f} MB; the limit is {limit} MB)")
    try:
        data = np.fromfile(file, np.uint8)
    except OSError as exc:
        raise ImageReadError(file, f"cannot read file ({exc.strerror or exc})") from None
    orientation = _probe(file, data)
    with captured_stderr() as messages:  # libpng, libjpeg and OpenCV speak on stderr
        try:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
    said = next((m for m in messages if any(sign in m.lower() for sign in _DAMAGE_SIGNS)), None)
    if image is None or image.size == 0 or image.ndim not in (2, 3):
        raise ImageReadError(file, _DECODE_FAILED + (f": {said}" if said else ""))
    if said is not None:
        raise ImageReadError(file, f"damaged image, only partly decoded ({said})")
    _check_pixels(file, image.shape[1], image.shape[0])
    bits = _png_significant_bits(data) if image.dtype == np.uint16 else None
    if bits is not None and bits < 16:  # e.g. a 12-bit camera's PNG: its real range, not 65535
        top = (1 << bits) - 1
        image = (np.minimum(image, top).astype(np.uint32) * 65535 // top).astype(np.uint16)
    return file, _oriented(image, orientation)


def _png_significant_bits(data: np.ndarray) -> int | None:
    """The significant bits a PNG declares in its ``sBIT`` chunk (the largest over channels), or ``None``."""
    raw = data.data
    if bytes(raw[:8]) != b"\x89PNG\r\n\x1a\n":
        return None
    at = 8
    while at + 8 <= len(raw):
        length = int.from_bytes(raw[at : at + 4], "big")
        kind = bytes(raw[at + 4 : at + 8])
        if kind == b"sBIT":
            values = bytes(raw[at + 8 : at + 8 + length])
            return max(values) if values and 1 <= max(values) <= 16 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        at += 12 + length
    return None


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit values of an image of any depth; ``ValueError`` for non-finite or boolean pixels."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        raise ValueError("boolean pixels: expected an image, not a mask")
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("non-finite pixel values (NaN or infinity)")
        values = image.astype(np.float32)  # one working copy, changed in place
        if values.max(initial=0.0) <= 1.0:
            values *= np.float32(255.0)
        np.clip(values, 0.0, 255.0, out=values)
        return np.rint(values, out=values).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 RGB ``uint8``.

    Grayscale becomes RGB, alpha is dropped, palette images are expanded, 16-bit values are scaled to 0..255
    from their real range (the significant bits a PNG declares, e.g. 12; else 16) and float images are taken as
    0..1 (when their maximum is at most 1) or 0..255.
    """
    file, image = _decode(path)
    try:
        image = _to_uint8(image)
    except ValueError as err:
        raise ImageReadError(file, str(err)) from None
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[:, :, 0]
    if image.ndim == 2:
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.shape[2] == 4:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        raise ImageReadError(file, f"unsupported number of channels ({image.shape[2]})")
    return np.ascontiguousarray(rgb)


def as_rgb(image: object, name: str = "image") -> np.ndarray:
    """An in-memory image as H x W x 3 RGB ``uint8`` (channels taken as RGB), or a :class:`DataError` naming
    ``name`` and the problem. Grayscale becomes RGB, a fourth (alpha) channel is dropped, 16-bit and float
    values are scaled as :func:`read_image` scales them; empty, boolean and non-finite images are refused."""
    if not isinstance(image, np.ndarray):
        raise DataError(None, f"{name}: expected an H x W x 3 RGB array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(None, f"{name}: expected an H x W x 3 RGB array, got shape {image.shape}")
    try:
        image = _to_uint8(image)
    except ValueError as err:
        raise DataError(None, f"{name}: {err}") from None
    if image.ndim == 2 or image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as a ``bool`` array of ``shape`` (height, width).

    A pixel is set when any colour channel is above zero; an image whose colour channels are all zero is read
    from its alpha channel instead. Resizing uses nearest neighbour, so the mask stays binary.
    """
    height, width = (int(v) for v in shape)
    if height < 1 or width < 1:
        raise ValueError(f"mask shape: expected positive (height, width), got {tuple(shape)}")
    _, image = _decode(path)
    if image.ndim == 2:
        mask = image > 0
    else:
        colour = image[:, :, : min(3, image.shape[2])] if image.shape[2] != 2 else image[:, :, :1]
        mask = (colour > 0).any(axis=2)
        if image.shape[2] in (2, 4) and not mask.any():
            mask = image[:, :, -1] > 0
    if mask.shape != (height, width):
        resized = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask = resized > 0
    return mask


def load_images(
    paths: Iterable[str | Path],
    *,
    strict: bool = False,
    on_error: Callable[[DataError], None] | None = None,
) -> tuple[list[np.ndarray], list[int], list[DataError]]:
    """Read many images; return the images, the indices of the paths that were read, and the errors.

    With ``strict`` the first error is raised; otherwise ``on_error`` (if given) is called with it and reading
    goes on.
    """
    images: list[np.ndarray] = []
    indices: list[int] = []
    errors: list[DataError] = []
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
        except DataError as exc:
            if strict:
                raise
            if on_error is not None:
                on_error(exc)
            errors.append(exc)
            continue
        images.append(image)
        indices.append(index)
    return images, indices, errors
