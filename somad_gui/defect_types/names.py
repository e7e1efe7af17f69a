"""Cluster names kept with the dataset: one entry of the user's settings per dataset folder.

Pure Python apart from the settings store, which is any object with ``value(key)`` and ``setValue(key, value)``
(``QSettings`` by default), so the names survive restarts without writing into the dataset folder (which may be
read-only or shared).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

KEY_PREFIX = "defect_types/names"


def dataset_key(dataset: str | Path) -> str:
    """Settings key of a dataset folder: a hash of its resolved path (paths make poor settings keys)."""
    resolved = str(Path(dataset).expanduser().resolve())
    return f"{KEY_PREFIX}/{hashlib.sha1(resolved.encode('utf-8')).hexdigest()[:16]}"


class ClusterNames:
    """The names a user gave to the clusters of one dataset (cluster label -> name)."""

    def __init__(self, dataset: str | Path | None, store: Any = None):
        self.dataset = None if dataset is None else Path(dataset)
        self._store = store
        self.names: dict[int, str] = {}
        self.load()

    def _settings(self):
        if self._store is None:
            from somad_gui.app import settings

            self._store = settings()
        return self._store

    def load(self) -> dict[int, str]:
        self.names = {}
        if self.dataset is None:
            return self.names
        raw = self._settings().value(dataset_key(self.dataset))
        try:
            data = json.loads(raw) if raw else {}
            self.names = {int(k): str(v) for k, v in data.get("names", {}).items() if str(v).strip()}
        except (TypeError, ValueError, AttributeError):
            self.names = {}
        return self.names

    def save(self) -> None:
        if self.dataset is None:
            return
        payload = {"dataset": str(self.dataset), "names": {str(k): v for k, v in sorted(self.names.items())}}
        store = self._settings()
        store.setValue(dataset_key(self.dataset), json.dumps(payload))
        if hasattr(store, "sync"):
            store.sync()

    def name(self, label: int) -> str:
        """The user's name of a cluster, or the default: "good" for 0, "cluster N" otherwise."""
        if label in self.names:
            return self.names[label]
        return "good" if label == 0 else f"cluster {label}"

    def rename(self, label: int, name: str) -> None:
        """Keep ``name`` for ``label`` (an empty name restores the default) and save at once."""
        name = name.strip()
        if name:
            self.names[int(label)] = name
        else:
            self.names.pop(int(label), None)
        self.save()
