"""``.somad`` model files: safetensors tensors plus JSON metadata; never pickles, always written atomically.

The metadata (under the safetensors header key ``somad``) holds the format name and version, the method, the
full configuration, the weights' origin, the thresholds, the training summary and a SHA-256 of every tensor,
so a truncated, edited or foreign file is refused with a clear message and no code is ever executed. The method
is ``somad`` or another key of :data:`core.methods.METHODS` (then with its ``method_options``), and
:func:`load_any_model` picks the loader by it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from core.atomic import write_bytes_atomically
from core.config import SomadConfig
from core.errors import ConfigError, ModelFileError

FORMAT_NAME = "somad-inspector"
FORMAT_VERSION = 1
METADATA_KEY = "somad"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def write_model_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write tensors and metadata to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ModelFileError(path, "folder does not exist")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {
        **metadata,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sha256": tensor_digest(tensors),
    }
    return write_bytes_atomically(path, save_bytes(tensors, metadata={METADATA_KEY: json.dumps(header)}))


def read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a model file; :class:`ModelFileError` names the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "model file not found")
    if not path.is_file():
        raise ModelFileError(path, "not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise ModelFileError(path, "not a SOMAD model file (safetensors without SOMAD metadata)")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except ModelFileError:
        raise
    except Exception as err:
        raise ModelFileError(path, f"not a SOMAD model file, or truncated ({type(err).__name__})") from err
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ModelFileError(path, "corrupt metadata (invalid JSON)") from err
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(path, f"unknown format {metadata.get('format')!r}")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {version!r} is newer than this program reads ({FORMAT_VERSION})"
        )
    if metadata.get("sha256") != tensor_digest(tensors):
        raise ModelFileError(path, "checksum mismatch: the file was modified or damaged")
    return tensors, metadata


def save_model(model, path: str | Path) -> Path:
    """Write a fitted :class:`~core.model.SomadModel` to a ``.somad`` file."""
    tensors = {
        "som_weights": model.som_weights,
        "node_means": model.gaussians.means,
        "node_inverse_cholesky": model.gaussians.inverse_cholesky,
        "node_counts": model.gaussians.counts.to(torch.int64),
        "channel_indices": torch.from_numpy(np.asarray(model.channel_indices, dtype=np.int64)),
    }
    return write_model_file(path, tensors, _somad_metadata(model))


def _somad_metadata(model) -> dict[str, Any]:
    return {
        "method": "somad",
        "config": model.config.to_dict(),
        "backbone": model.config.features.backbone,
        "weights_origin": model.weights_origin,
        "random_init": model.random_init,
        "image_size": model.config.features.image_size,
        "thresholds": model.thresholds,
        "training_summary": model.training_summary,
    }


def model_metadata(model) -> dict[str, Any]:
    """The JSON metadata a fitted model of any method writes to its file (without format and checksum)."""
    from core.model import SomadModel

    if isinstance(model, SomadModel):
        return _somad_metadata(model)
    return model.file_state()[1]


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_model(metadata: dict[str, Any], channels: int | None = None) -> list[tuple[str, str]]:
    """What a person wants to know of a model, as (field, text) rows: method, backbone, weights (flagged when
    random), the method's settings, thresholds and training summary. ``metadata`` is a file's metadata
    (:func:`read_model_file`) or :func:`model_metadata` of a loaded model."""
    from core.bundled_weights import describe_origin
    from core.methods import METHODS

    cfg = metadata["config"]
    method = metadata.get("method", "somad")
    info = METHODS.get(method)
    label = info.label if info is not None else method
    gives_maps = metadata.get("gives_maps", True)
    channels = cfg["features"]["dims"] if channels is None else channels
    rows = [
        ("method", f"{label}: " + ("anomaly maps" if gives_maps else "image scores only (no heatmap)")),
        (
            "backbone",
            f"{metadata['backbone']} layers {', '.join(map(str, cfg['features']['layers']))} at "
            f"{metadata['image_size']} px, "
            f"{channels} channels",
        ),
        (
            "weights",
            describe_origin(str(metadata["weights_origin"]))
            + ("  (RANDOM INIT)" if metadata.get("random_init") else ""),
        ),
    ]
    if method == "somad":
        som = cfg["som"]
        rows.append(("SOM", f"{som['rows']} x {som['cols']}, {som['epochs']} epochs, init {som['init']}"))
        rows.append(
            (
                "statistics",
                f"lambda {cfg['statistics']['lam']}, shrinkage {cfg['statistics']['shrinkage']}; "
                f"k {cfg['scoring']['k']}, sigma {cfg['scoring']['sigma']}",
            )
        )
    else:
        options = metadata.get("method_options") or {}
        rows.append(("options", ", ".join(f"{k} {_number(v)}" for k, v in options.items()) or "none"))
        used = [n for n in ("statistics.lam", "scoring.sigma") if info is not None and info.applies(n)]
        if used:
            rows.append(("config", ", ".join(f"{n} {cfg[n.split('.')[0]][n.split('.')[1]]}" for n in used)))
    thresholds = metadata.get("thresholds") or {}
    rows.append(("thresholds", ", ".join(f"{k} {_number(v)}" for k, v in thresholds.items()) or "none"))
    summary = metadata.get("training_summary") or {}
    seconds = summary.get("seconds") or {}
    rows.append(
        (
            "training",
            f"{summary.get('n_images')} images of {summary.get('category')!r} on {summary.get('device')}"
            + (f"; {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}" if seconds else ""),
        )
    )
    return rows


def load_model(path: str | Path, device: str = "auto"):
    """Read a ``.somad`` file into a :class:`~core.model.SomadModel` on ``device``; shapes are checked.

    Files of other methods are refused here; :func:`load_any_model` reads every method.
    """
    path = Path(path)
    tensors, meta = read_model_file(path)
    if meta.get("method", "somad") != "somad":
        raise ModelFileError(path, f"method {meta.get('method')!r} is not supported by this loader")
    return _somad_model(path, tensors, meta, device)


def save_any_model(model, path: str | Path) -> Path:
    """Write a fitted model of any method: SOMAD exactly as :func:`save_model`, others by their ``method``.

    A non-SOMAD model (:class:`~core.methods.MethodModel`) is stored with the same container, checksum and
    format version: its tensors under ``detector.*`` plus ``channel_indices``, and in the metadata
    ``method``, ``method_options``, ``gives_maps`` and the same fields as a SOMAD file.
    """
    from core.model import SomadModel

    if isinstance(model, SomadModel):
        return save_model(model, path)
    if getattr(model, "method", None) == "somad":
        return save_model(model.somad_model(), path)
    tensors, metadata = model.file_state()
    return write_model_file(path, tensors, metadata)


def load_any_model(path: str | Path, device: str = "auto"):
    """Read a model file of any method: a :class:`~core.model.SomadModel` for SOMAD files (as
    :func:`load_model`), a :class:`~core.methods.MethodModel` for the others, chosen by ``method``."""
    path = Path(path)
    tensors, meta = read_model_file(path)
    if meta.get("method", "somad") == "somad":
        return _somad_model(path, tensors, meta, device)
    from core.methods.model import MethodModel

    return MethodModel.from_file_state(path, tensors, meta, device)


def _somad_model(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: str):
    from core.gaussian import NodeGaussians
    from core.model import SomadModel

    try:
        config = SomadConfig.from_dict(meta["config"]).validate()
    except (KeyError, TypeError, ConfigError) as err:
        raise ModelFileError(path, f"invalid configuration in metadata ({err})") from err
    required = ("som_weights", "node_means", "node_inverse_cholesky", "node_counts", "channel_indices")
    missing = [name for name in required if name not in tensors]
    if missing:
        raise ModelFileError(path, f"missing tensors: {', '.join(missing)}")
    n_nodes = config.som.rows * config.som.cols
    dims = tensors["channel_indices"].numel()
    expected = {
        "som_weights": (n_nodes, dims),
        "node_means": (n_nodes, dims),
        "node_inverse_cholesky": (n_nodes, dims, dims),
        "node_counts": (n_nodes,),
    }
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelFileError(
                path, f"tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
    model = SomadModel(
        config=config,
        weights_origin=str(meta.get("weights_origin", "unknown")),
        channel_indices=tensors["channel_indices"].numpy().astype(np.int64),
        som_weights=tensors["som_weights"].float(),
        gaussians=NodeGaussians(
            tensors["node_means"].float(), tensors["node_inverse_cholesky"].float(), tensors["node_counts"]
        ),
        thresholds={k: float(v) for k, v in (meta.get("thresholds") or {}).items()},
        training_summary=dict(meta.get("training_summary") or {}),
    )
    return model.to(device)
