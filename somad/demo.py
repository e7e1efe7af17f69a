"""Built-in demo data: a deterministic synthetic inspection set of machined metal discs.

Good parts are turned discs (concentric machining rings, fine surface noise, a central bore and six bolt
holes) on a dark background, jittered by a few pixels in position, a few degrees in rotation and a few
percent in brightness. Defective parts carry one small planted defect: a thin dark or bright "scratch", or a
rust-brown "spot". Masks cover exactly the changed pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from somad.config import FeatureConfig, ScoringConfig, SomadConfig, SomConfig
from somad.errors import ConfigError, DataError

#: A small configuration that fits the built-in demo set in well under a minute on a 2-core CPU, on the
#: default backbone's bundled ImageNet weights.
DEMO_CONFIG = SomadConfig(
    features=FeatureConfig(layers=(1, 2, 3), image_size=128, dims=64),
    som=SomConfig(rows=16, cols=16, epochs=6),
    scoring=ScoringConfig(k=4, sigma=4.0),
)

DEMO_DEFECT_TYPES = ("scratch", "spot")
MARKER_NAME = ".somad_demo.json"
_FORMAT = 1
_RUST = np.array([150.0, 72.0, 32.0], np.float32)
_TINT = np.array([0.98, 1.0, 1.04], np.float32)
_METAL_LEVEL = 85  # grey level separating metal from background and holes


@dataclass
class DemoArrays:
    """An in-memory demo set: good training images, test images with their masks and defect types."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    masks: list[np.ndarray]
    defect_types: list[str]

    @property
    def labels(self) -> np.ndarray:
        """0 for good test images, 1 for defective ones."""
        return np.array([0 if t == "good" else 1 for t in self.defect_types], dtype=np.int64)


def _radial_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, n + 8)
    kernel = np.hanning(7)
    return np.convolve(noise, kernel / kernel.sum(), mode="same")[4 : 4 + n]


def demo_part(rng: np.random.Generator, size: int) -> np.ndarray:
    """Render one good part: an H x W x 3 RGB ``uint8`` image of a machined disc."""
    s = float(size)
    cx, cy = (s / 2 + rng.uniform(-0.02, 0.02, 2) * s).tolist()
    angle = np.deg2rad(rng.uniform(-5.0, 5.0))
    gain = rng.uniform(0.94, 1.06)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    dx, dy = xx - np.float32(cx), yy - np.float32(cy)
    r = np.hypot(dx, dy)
    radius = 0.40 * s

    def noise(sigma: float) -> np.ndarray:
        return rng.standard_normal((size, size), dtype=np.float32) * np.float32(sigma)

    rings = 6.0 * np.sin(r * np.float32(2 * np.pi / max(0.035 * s, 2.5)))
    radial = _radial_noise(rng, size + 8).astype(np.float32) * np.float32(5.0)
    ri = r.astype(np.int32)
    frac = r - ri
    profile = radial[ri] * (1.0 - frac) + radial[ri + 1] * frac  # linear interpolation along the radius
    metal = 150.0 + rings + profile + noise(3.0) + (dx - dy) * np.float32(8.0 / radius)
    metal += 25.0 * np.exp(-np.square((r - (radius - 2.0)) / 1.5))  # bevelled rim
    bore, chamfer = 0.09 * s, 0.125 * s
    metal += np.where((r > bore) & (r < chamfer), (chamfer - r) * np.float32(30.0 / (chamfer - bore)), 0.0)

    background = 38.0 + noise(2.0) - 12.0 * np.exp(-np.square((r - radius) / 4.0))
    inside = np.clip(radius - r + 0.5, 0.0, 1.0)
    gray = (background * (1.0 - inside) + metal * inside).astype(np.float32)

    holes = np.clip(bore - r + 0.5, 0.0, 1.0).astype(np.float32)
    hole_r, pitch = 0.032 * s, 0.26 * s
    reach = int(np.ceil(hole_r + 5))
    for k in range(6):
        a = angle + k * np.pi / 3
        hx, hy = cx + pitch * np.cos(a), cy + pitch * np.sin(a)
        y0, y1 = max(int(hy) - reach, 0), min(int(hy) + reach + 1, size)
        x0, x1 = max(int(hx) - reach, 0), min(int(hx) + reach + 1, size)
        d = np.hypot(xx[y0:y1, x0:x1] - np.float32(hx), yy[y0:y1, x0:x1] - np.float32(hy))
        gray[y0:y1, x0:x1] += 30.0 * np.exp(-np.square(d - (hole_r + 1.0)))  # bright edge around the hole
        np.maximum(holes[y0:y1, x0:x1], np.clip(hole_r - d + 0.5, 0.0, 1.0), out=holes[y0:y1, x0:x1])
    gray = gray * (1.0 - holes) + 22.0 * holes

    rgb = gray[:, :, None] * (_TINT * np.float32(gain))
    return np.rint(np.clip(rgb, 0, 255)).astype(np.uint8)


def _metal_region(image: np.ndarray, margin: int) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    metal = (gray > _METAL_LEVEL).astype(np.uint8)
    if margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        metal = cv2.erode(metal, kernel)
    return metal > 0


def _pick(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return np.array(region.shape[::-1], np.float64) / 2
    i = rng.integers(ys.size)
    return np.array([xs[i], ys[i]], np.float64)


def _scratch_mask(image: np.ndarray, rng: np.random.Generator, metal: np.ndarray) -> np.ndarray:
    safe = _metal_region(image, 2)
    xs = np.nonzero(metal.any(axis=0))[0]
    width = float(xs[-1] - xs[0] + 1) if xs.size else float(image.shape[1])
    thickness = int(rng.integers(1, 4))
    best, best_score = None, -1.0
    for _ in range(100):
        length = rng.uniform(0.15, 0.40) * width
        start = _pick(rng, safe)
        theta = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(theta), np.sin(theta)])
        end = start + length * direction
        bend = rng.uniform(-0.25, 0.25) * length * np.array([-direction[1], direction[0]])
        t = np.linspace(0.0, 1.0, max(int(length), 8))[:, None]
        curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * ((start + end) / 2 + bend) + t**2 * end
        pts = np.rint(curve).astype(np.int32)
        h, w = safe.shape
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        score = float(safe[pts[ok, 1], pts[ok, 0]].sum()) / len(pts)
        if score > best_score:
            best, best_score = pts, score
        if score == 1.0:
            break
    canvas = np.zeros(image.shape[:2], np.uint8)
    cv2.polylines(canvas, [best.reshape(-1, 1, 2)], False, 255, thickness, cv2.LINE_8)
    return canvas > 0


def _spot_mask(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = min(image.shape[:2])
    diameter = rng.uniform(0.04, 0.10) * size
    safe = _metal_region(image, int(np.ceil(diameter / 2)) + 1)
    centre = _pick(rng, safe if safe.any() else _metal_region(image, 0))
    n = 24
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = 1.0 + 0.12 * np.convolve(rng.normal(0, 1, n + 4), np.ones(5) / 5, mode="valid")
    squash, tilt = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    ex, ey = np.cos(theta) * wobble, np.sin(theta) * wobble * squash
    poly = np.stack([ex * np.cos(tilt) - ey * np.sin(tilt), ex * np.sin(tilt) + ey * np.cos(tilt)], axis=1)
    pts = np.rint(centre + poly * diameter / 2).astype(np.int32)
    canvas = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(canvas, [pts.reshape(-1, 1, 2)], 255, cv2.LINE_8)
    return canvas > 0


def plant_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Plant one defect of ``kind`` ("scratch" or "spot") on the metal of a good part.

    Returns the defective copy and a ``bool`` mask of exactly the pixels that were changed.
    """
    if kind not in DEMO_DEFECT_TYPES:
        raise ValueError(f"defect kind: expected one of {', '.join(DEMO_DEFECT_TYPES)}, got {kind!r}")
    metal = _metal_region(image, 0)
    out = image.astype(np.float32)
    if kind == "scratch":
        mask = _scratch_mask(image, rng, metal) & metal
        if rng.random() < 0.5:
            out[mask] *= 0.35
        else:
            out[mask] = 250.0
    else:
        mask = _spot_mask(image, rng) & metal
        grain = rng.uniform(0.85, 1.1, (int(mask.sum()), 1)).astype(np.float32)
        out[mask] = 0.2 * out[mask] + 0.8 * _RUST * grain
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8), mask


def _check_counts(n_train: int, n_test_good: int, n_test_per_defect: int, size: int) -> None:
    if n_train < 1:
        raise ConfigError(f"n_train: expected at least 1 image, got {n_train}")
    if n_test_good < 0 or n_test_per_defect < 0:
        raise ConfigError("n_test_good and n_test_per_defect: expected >= 0")
    if not 32 <= size <= 2048:
        raise ConfigError(f"size: expected 32..2048 pixels, got {size}")


def demo_arrays(
    *, n_train: int = 40, n_test_good: int = 10, n_test_per_defect: int = 8, size: int = 128, seed: int = 0
) -> DemoArrays:
    """Generate the demo set in memory; the same arguments always give the same arrays.

    Each image is drawn from its own generator seeded with (seed, group, index), so changing one count leaves
    the other groups' images unchanged. Test images are ordered good, then each defect type in turn.
    """
    _check_counts(n_train, n_test_good, n_test_per_defect, size)

    def rng(group: int, index: int) -> np.random.Generator:
        return np.random.default_rng([seed, group, index])

    train = [demo_part(rng(0, i), size) for i in range(n_train)]
    test = [demo_part(rng(1, i), size) for i in range(n_test_good)]
    masks = [np.zeros((size, size), bool) for _ in range(n_test_good)]
    types = ["good"] * n_test_good
    for g, kind in enumerate(DEMO_DEFECT_TYPES, start=2):
        for i in range(n_test_per_defect):
            r = rng(g, i)
            image, mask = plant_defect(demo_part(r, size), kind, r)
            test.append(image)
            masks.append(mask)
            types.append(kind)
    return DemoArrays(train, test, masks, types)


def _write_png(path: Path, image: np.ndarray) -> None:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise DataError(path, "cannot encode PNG")
    buffer.tofile(path)


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_tree(folder: Path, data: DemoArrays) -> None:
    """Write ``data`` under ``folder`` in the MVTec AD layout, numbering each group from 000."""
    (folder / "train" / "good").mkdir(parents=True)
    for i, image in enumerate(data.train):
        _write_png(folder / "train" / "good" / f"{i:03d}.png", image)
    counters: dict[str, int] = {}
    for image, mask, kind in zip(data.test, data.masks, data.defect_types, strict=True):
        i = counters[kind] = counters.get(kind, -1) + 1
        (folder / "test" / kind).mkdir(parents=True, exist_ok=True)
        _write_png(folder / "test" / kind / f"{i:03d}.png", image)
        if kind != "good":
            (folder / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            _write_png(folder / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)


def make_demo_dataset(
    root: str | Path,
    *,
    category: str = "demo_parts",
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_per_defect: int = 8,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write the demo set in the MVTec AD layout under ``root/category`` and return that folder.

    A folder already written with the same arguments is reused as it is; one written with other arguments is
    replaced. A folder of that name that is not a demo set is never touched (:class:`DataError`). Files appear
    all at once: they are written into a hidden sibling folder that is then renamed.
    """
    _check_counts(n_train, n_test_good, n_test_per_defect, size)
    if not category or category.startswith(".") or Path(category).name != category or "\\" in category:
        raise ConfigError(f"category: expected a plain folder name, got {category!r}")
    root = Path(root).expanduser()
    target = root / category
    params = {
        "format": _FORMAT,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_test_per_defect,
        "size": size,
        "seed": seed,
    }
    existing = _read_marker(target) if target.is_dir() else None
    if existing == params:
        return target
    if target.exists() and existing is None:
        raise DataError(target, "exists and is not a demo dataset; choose another folder")

    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{category}.", suffix=".tmp", dir=root))
    except OSError as exc:
        raise DataError(root, f"cannot write the demo dataset ({exc.strerror or exc})") from None
    try:
        _write_tree(tmp, demo_arrays(**{k: v for k, v in params.items() if k != "format"}))
        (tmp / MARKER_NAME).write_text(json.dumps(params, sort_keys=True), encoding="utf-8")
        old = None
        if target.exists():  # a demo set written with other arguments: move it aside, drop it once replaced
            old = Path(tempfile.mkdtemp(prefix=f".{category}.", suffix=".old", dir=root))
            os.replace(target, old / category)
        try:
            os.replace(tmp, target)
        except OSError:
            if _read_marker(target) != params:  # unless another writer finished the same set meanwhile
                if old is not None and not target.exists():
                    os.replace(old / category, target)
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise DataError(target, f"cannot write the demo dataset ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
