"""The defect-types pane's work, without Qt: thumbnails, clustering and re-clustering, run in a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import somad

#: Side of a thumbnail in pixels.
THUMB_SIDE = 96


def make_thumbnails(
    items: Sequence[np.ndarray | str | Path | None],
    maps: Sequence[np.ndarray | None] | None,
    threshold: float | None,
    side: int = THUMB_SIDE,
    *,
    progress=None,
    cancel=None,
) -> list[np.ndarray | None]:
    """Thumbnails (side x side RGB) of images given as arrays or files, outlined where ``map >= threshold``.

    An unreadable file gives ``None``. Pure numpy/OpenCV: runs in a worker thread.
    """

    monitor = somad.Monitor(progress, cancel)
    out: list[np.ndarray | None] = []
    for i, item in enumerate(items):
        if i % 8 == 0:
            monitor.step("thumbnails", i, len(items))
        try:
            image = (
                item if isinstance(item, np.ndarray) else somad.read_image(item) if item is not None else None
            )
        except somad.DataError:
            image = None
        if image is None:
            out.append(None)
            continue
        amap = None if maps is None else maps[i]
        out.append(somad.defects.thumbnail(image, amap, threshold, side))
    monitor.step("thumbnails", len(items), len(items))
    return out


def clustering_work(model, images, kwargs: dict, n, config, side: int, *, progress=None, cancel=None):

    data = somad.defects.compute_descriptors(
        model, images, config=config, progress=progress, cancel=cancel, **kwargs
    )
    result = somad.defects.cluster_set(data, n, config)
    # Arrays are always kept; files that could not be read are left out of the result, so go by its paths.
    items = list(images) if all(isinstance(i, np.ndarray) for i in images) else list(result.paths)
    thumbs = make_thumbnails(items, result.maps, result.map_threshold, side, progress=progress, cancel=cancel)
    return data, result, thumbs


def recluster_work(data, n, config, *, progress=None, cancel=None):

    return somad.defects.cluster_set(data, n, config)
