"""What the window's session runs in its worker: plain core calls, no Qt (each takes ``progress`` and
``cancel`` keywords, as :class:`~somad_gui.workers.JobRunner` passes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import somad


def open_dataset(path: Path, test_path: Path | None, *, progress=None, cancel=None) -> tuple[Any, list[Path]]:
    """Open a category folder, or the first category under a root of several (listed in the second item)."""
    try:
        return somad.open_dataset(path, test_path), []
    except somad.SomadError as first:
        try:
            categories = list(somad.find_categories(path))
        except somad.SomadError:
            categories = []
        if not categories:
            raise first from None
        return somad.open_dataset(categories[0]), categories


def prepare_demo(cache: Path, *, progress=None, cancel=None) -> Any:
    cache.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress("demo set", 0, 1)
    root = somad.make_demo_dataset(cache)
    if progress is not None:
        progress("demo set", 1, 1)
    return somad.open_dataset(root)


def fit_model(
    train: Any,
    config: Any,
    method: str,
    options: dict[str, Any] | None,
    save_to: Path | None,
    *,
    progress=None,
    cancel=None,
) -> tuple[Any, list[Any]]:
    """The fitted model (saved to ``save_to`` when given) and the training images that could not be read (their
    ``somad.DataError``, which names the file)."""
    unreadable: list[Any] = []
    model = somad.fit(
        train,
        config,
        method=method,
        options=options,
        progress=progress,
        cancel=cancel,
        on_error=unreadable.append,
    )
    if save_to is not None:
        if cancel is not None and cancel():
            raise somad.Cancelled("cancelled by the user")
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        model.save(save_to)
    return model, unreadable


def open_inspection(path: Path, *, progress=None, cancel=None) -> Any:
    return somad.open_inspection(path)


def update_model(model: Any, paths: list[Path], *, progress=None, cancel=None) -> Any:
    return model.update(paths, progress=progress, cancel=cancel)


def load_model(path: Path, *, progress=None, cancel=None) -> Any:
    return somad.load_any_model(path)


def save_model(model: Any, path: Path, *, progress=None, cancel=None) -> Path:
    with somad.claimed(path):  # not while a command writes the same file
        model.save(path)
    return path
