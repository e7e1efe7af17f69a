"""The window's demo: the synthetic set under a cache folder and its small model, fitted on first start and
loaded from the cache afterwards (fitted again when the cached file is unusable)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import somad
from somad_gui import work

DEMO_MODEL_NAME = "demo_model.somad"


def start(session: Any, cache: Path, config: Any = None):
    """Prepare the demo set in the worker; then open it with its model. ``session.demoReady`` fires once the
    test images are scored."""
    session.demo_cache = cache
    job = session.jobs.start("dataset", partial(work.prepare_demo, cache), "Preparing the demo set")
    job.succeeded.connect(lambda ds: _opened(session, ds, cache, config))
    job.failed.connect(lambda msg: session.error(f"Cannot prepare the demo set: {msg}"))
    return job


def _opened(session: Any, dataset: Any, cache: Path, config: Any) -> None:
    session.set_dataset(dataset)
    model_file = cache / DEMO_MODEL_NAME
    cfg = config if config is not None else somad.DEMO_CONFIG

    def refit(reason: str | None = None) -> None:
        if reason:
            session.warn(f"Cached demo model unusable ({reason}); fitting a new one")
        session.fit(cfg, save_to=model_file)

    def stale(model: Any) -> str | None:
        if bool(getattr(model, "random_init", False)) != cfg.features.random_init:
            return f"{model_file.name} was fitted on other backbone weights than the demo's"
        return None

    if model_file.exists():
        session.load_model(model_file, on_failure=refit, check=stale)
    else:
        session.info("First start of the demo: fitting a small model in the background (cached afterwards)")
        refit()

    def once() -> None:
        session.scoringFinished.disconnect(once)
        session.demoReady.emit()

    session.scoringFinished.connect(once)
