"""The benchmark runner behind ``somad bench``: every method on the same cached features, one Markdown table per
category (the command itself is :mod:`somad_cli.bench`).

For each category of DATA (an MVTec-layout category or a root holding several) the training and test images
go through the backbone once (:class:`~somad.feature_cache.FeatureCache`); every method is then fitted on the
same training features and scored on the same test features. Per method and category: image AUROC, pixel
AUROC and PRO (``None`` / n/a for image-level methods, which give no map), fit seconds (on cached features),
milliseconds per test image (reading and backbone, measured once for all methods, plus the method's own
scoring and map making), the model file's size, and the process's peak resident memory during the method's
fit and scoring (Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``; it includes the cached
features held for every method).

Each finished (method, category) result is stored at once in ``bench-results.json`` in the cache folder,
keyed by everything it depends on, so a run that was interrupted resumes where it stopped and a repeated run
only prints (``--fresh`` recomputes). Backbones with random weights are flagged in every table header.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from somad import metrics
from somad.atomic import write_text_atomically
from somad.bundled_weights import describe_origin
from somad.config import SomadConfig
from somad.errors import DataError
from somad.evaluation import pixel_metrics
from somad.extraction import ExtractedFeatures, FeatureSet, raise_if_empty
from somad.feature_cache import FeatureCache
from somad.methods import METHODS, create_detector
from somad.model import FittedModel
from somad.progress import Monitor, ProgressCallback

RESULTS_NAME = "bench-results.json"
RESULTS_FORMAT = 1
Log = Callable[[str], None]


def default_cache_folder() -> Path:
    """``$XDG_CACHE_HOME/somad-inspector/features`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "somad-inspector" / "features"


# -- peak memory ----------------------------------------------------------------------------------------
class PeakMemory:
    """Peak resident memory (and CUDA memory) of this process between :meth:`start` and :meth:`stop`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = False

    def start(self) -> None:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so they do not count
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.resettable = True
        except OSError:
            self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> dict[str, float | None]:
        peak = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except OSError:
            pass
        if peak is None:
            import resource

            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        cuda = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        return {"peak_mb": peak, "peak_cuda_mb": cuda}


# -- stored results -------------------------------------------------------------------------------------
def _read_results(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if data.get("format") != RESULTS_FORMAT or not isinstance(data.get("results"), dict):
        return {}
    return data["results"]


def _write_results(path: Path | None, results: Mapping[str, Any]) -> None:
    if path is None:
        return
    text = json.dumps({"format": RESULTS_FORMAT, "results": results}, indent=1)
    write_text_atomically(path, text)


def result_key(method: str, options: Mapping, config: SomadConfig, feature_keys: Sequence[str]) -> str:
    """Everything a stored result depends on: method, its options, the configuration options that apply to
    it, the device, and the feature cache keys (which cover backbone, weights and every image file)."""
    flat = _flatten(config.to_dict())
    relevant = {k: flat[k] for k in METHODS[method].config_options if k in flat}
    text = json.dumps([method, dict(options), relevant, list(feature_keys)], sort_keys=True, default=str)
    return f"{method}:{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# -- one method on one category ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_method(
    method: str,
    options: Mapping[str, Any],
    config: SomadConfig,
    train: ExtractedFeatures,
    test: ExtractedFeatures,
    augmented: ExtractedFeatures | None,
    labels: np.ndarray,
    samples: list,
    monitor: Monitor,
) -> dict[str, Any]:
    """Fit ``method`` on ``train``, score ``test``; metrics, timings, model size and peak memory."""
    from somad.devices import resolve_device

    device = resolve_device(config.device)
    detector = create_detector(method, config, options, device)
    train_set = FeatureSet(
        train.features.patches if detector.needs_patches else None,
        train.features.pooled if detector.needs_pooled else {},
        augmented.features.augmented if (augmented is not None and detector.wants_augmented) else {},
    )
    test_set = FeatureSet(
        test.features.patches if detector.needs_patches else None,
        test.features.pooled if detector.needs_pooled else {},
    )
    peak = PeakMemory(device)
    peak.start()
    t0 = time.perf_counter()
    detector.fit(train_set, monitor)
    _sync(device)
    fit_s = time.perf_counter() - t0

    batch = config.features.batch_size
    n = len(test.paths)
    maps: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, batch):
            monitor.step("scoring", start, n)
            stop = min(start + batch, n)
            batch_maps, batch_scores = detector.anomaly_maps(
                test_set.rows(start, stop), test.sizes[start:stop]
            )
            scores.append(batch_scores)
            if batch_maps is not None:
                maps += batch_maps
    _sync(device)
    head_s = time.perf_counter() - t0
    memory = peak.stop()
    monitor.step("scoring", n, n)

    image_scores = np.concatenate(scores)
    pixel_auroc = pro = None
    if detector.gives_maps:
        pixel_auroc, pro = pixel_metrics(samples, maps)
    model = FittedModel(
        method, detector.config, detector, train.weights_origin, train.channel_indices, device=device
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_mb = model.save(Path(tmp) / f"{method}.somad").stat().st_size / 2**20
    head_ms = 1000.0 * head_s / max(n, 1)
    return {
        "image_auroc": metrics.image_auroc(labels, image_scores),
        "pixel_auroc": pixel_auroc,
        "pro": pro,
        "fit_s": fit_s,
        "ms_per_image": test.ms_per_image + head_ms,
        "feature_ms_per_image": test.ms_per_image,
        "head_ms_per_image": head_ms,
        "model_mb": model_mb,
        "peak_mb": memory["peak_mb"],
        "peak_cuda_mb": memory["peak_cuda_mb"],
        "n_train": len(train.paths),
        "n_test": n,
    }


# -- the whole run --------------------------------------------------------------------------------------
def run_bench(
    root: str | Path,
    config: SomadConfig,
    methods: Sequence[str],
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cache_folder: str | Path | None = None,
    resume: bool = True,
    progress: ProgressCallback | None = None,
    log: Log | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Run ``methods`` on every category under ``root``; returns the report (see :func:`markdown`).

    With ``cache_folder`` features are cached there and finished results stored next to them, so a rerun
    resumes (``resume=False`` recomputes every result; features stay cached).
    """
    from somad.data import find_categories, open_dataset
    from somad.devices import device_name, resolve_device
    from somad.features import configure_threads
    from somad.training import training_paths

    config = config.validate()
    log = log or (lambda text: print(text, file=sys.stderr))
    options = {m: METHODS[m].validate((options or {}).get(m)) for m in methods}
    configure_threads()
    device = resolve_device(config.device)
    monitor = Monitor(progress)
    cache = FeatureCache(
        cache_folder,
        device=device,
        progress=progress,
        strict=strict,
        on_error=lambda err: log(f"warning: {err}"),
    )
    results_path = None if cache_folder is None else Path(cache_folder).expanduser() / RESULTS_NAME
    stored = _read_results(results_path)
    report: dict[str, Any] = {
        "random_init": config.features.random_init,
        "backbone": config.features.backbone,
        "weights_origin": None,
        "features": asdict(config.features),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "methods": {
            m: {
                "label": METHODS[m].label,
                "gives_maps": METHODS[m].gives_maps,
                "options": options[m],
                "categories": {},
            }
            for m in methods
        },
        "categories": {},
    }
    for folder in find_categories(root):
        dataset = open_dataset(folder)
        samples = [s for s in dataset.test if s.label >= 0]
        if not samples:
            raise DataError(folder, "no labelled test images (expected test/good and test/<defect>)")
        train = cache.get(config.features, training_paths(dataset, config.max_train))
        raise_if_empty(train, f"{dataset.name} training")
        test = cache.get(config.features, [s.path for s in samples])
        raise_if_empty(test, f"{dataset.name} test")
        wants_augmented = any(METHODS[m].detector.needs_pooled and options[m].get("augment") for m in methods)
        augmented = cache.get(config.features, train.paths, augmented=True) if wants_augmented else None
        # cached features may name the same files through another route (a moved or re-linked folder)
        by_path = {Path(s.path).resolve(): s for s in samples}
        kept = [by_path[Path(p).resolve()] for p in test.paths]
        labels = np.array([s.label for s in kept])
        report["weights_origin"] = train.weights_origin
        report["categories"][dataset.name] = {
            "n_train": len(train.paths),
            "n_test": len(test.paths),
            "n_unreadable": len(train.unreadable) + len(test.unreadable),
            "feature_ms_per_image": test.ms_per_image,
            "train_feature_s": train.seconds,
            "pixel_masks": all(s.label == 0 or s.mask_path is not None for s in kept),
        }
        keys = [train.key, test.key] + ([augmented.key] if augmented is not None else [])
        for method in methods:
            key = result_key(method, options[method], config, keys)
            if resume and key in stored:
                result = stored[key]["result"]
                log(f"{dataset.name} {method}: stored result reused")
            else:
                log(f"{dataset.name} {method}: fitting")
                result = run_method(
                    method, options[method], config, train, test, augmented, labels, kept, monitor
                )
                stored[key] = {"method": method, "category": dataset.name, "result": result}
                _write_results(results_path, stored)
                log(
                    f"{dataset.name} {method}: image AUROC {_fmt(result['image_auroc'])}, "
                    f"fit {result['fit_s']:.1f} s"
                )
            report["methods"][method]["categories"][dataset.name] = result
    return report


# -- tables ---------------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mb(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _setup_line(report: Mapping[str, Any]) -> str:
    f = report["features"]
    weights = (
        "RANDOM-INIT weights (untrained: not comparable with pretrained figures)"
        if report["random_init"]
        else describe_origin(str(report.get("weights_origin") or "pretrained"))
    )
    layers = ",".join(map(str, f["layers"]))
    return (
        f"{f['backbone']}, {weights}; layers {layers}, {f['image_size']} px, d = {f['dims']}; "
        f"{report['device']}, {report['threads']} threads"
    )


def markdown(report: Mapping[str, Any]) -> str:
    """One table per category (and a table of means when there are several), random init flagged."""
    flag = " [RANDOM-INIT backbone]" if report["random_init"] else ""
    lines = [f"Setup: {_setup_line(report)}", ""]
    header = (
        f"| method{flag} | image AUROC | pixel AUROC | PRO | fit s | ms/image | model MB | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    )
    categories = list(report["categories"])
    for name in categories:
        info = report["categories"][name]
        lines += [
            f"### {name}{flag}",
            "",
            f"{info['n_train']} training and {info['n_test']} test images; reading and backbone "
            f"{info['feature_ms_per_image']:.1f} ms per image (included in ms/image)"
            + ("" if info["pixel_masks"] else "; no masks: pixel metrics n/a"),
            "",
            *header,
        ]
        for entry in report["methods"].values():
            r = entry["categories"].get(name)
            if r is None:
                continue
            lines.append(
                f"| {entry['label']} | {_fmt(r['image_auroc'])} | {_fmt(r['pixel_auroc'])} | {_fmt(r['pro'])} "
                f"| {r['fit_s']:.1f} | {r['ms_per_image']:.1f} | {_mb(r['model_mb'])} | {_fmt(r['peak_mb'], 0)} |"
            )
        lines.append("")
    if len(categories) > 1:
        lines += [f"### mean over {len(categories)} categories{flag}", "", *header]
        for entry in report["methods"].values():
            rs = list(entry["categories"].values())
            if not rs:
                continue

            def mean(key: str, rs=rs) -> float | None:
                return _mean([r[key] for r in rs])

            lines.append(
                f"| {entry['label']} | {_fmt(mean('image_auroc'))} | {_fmt(mean('pixel_auroc'))} "
                f"| {_fmt(mean('pro'))} | {mean('fit_s'):.1f} | {mean('ms_per_image'):.1f} "
                f"| {_mb(mean('model_mb') or 0.0)} | {_fmt(mean('peak_mb'), 0)} |"
            )
        lines.append("")
    return "\n".join(lines)
