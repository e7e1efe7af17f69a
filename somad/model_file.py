"""``.somad`` model files: safetensors tensors plus JSON metadata; never pickles, always written atomically.

The metadata (under the safetensors header key ``somad``) holds the format name and version, the method, the
full configuration, the weights' origin, the thresholds, the training summary and a SHA-256 of every tensor,
so a truncated, edited or foreign file is refused with a clear message and no code is ever executed. The method
is ``somad`` or another key of :data:`somad.methods.METHODS` (then with its ``method_options``);
:meth:`somad.model.FittedModel.from_file_state` rebuilds the model from what :func:`read_model_file` returns.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from somad.atomic import write_bytes_atomically
from somad.bundled_weights import describe_origin
from somad.errors import ModelFileError
from somad.methods.registry import METHODS
from somad.model_schema import check_metadata

FORMAT_NAME = "somad-inspector"
#: 2: the metadata is covered by its own digest (``metadata_sha256``); 1: only the tensors are (read as they are).
FORMAT_VERSION = 2
METADATA_KEY = "somad"


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, shapes, dtypes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def metadata_digest(metadata: dict[str, Any]) -> str:
    """SHA-256 of the metadata's canonical JSON (sorted keys, no spaces), its own digest left out."""
    body = {k: v for k, v in metadata.items() if k != "metadata_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
    header["metadata_sha256"] = metadata_digest(header)
    return write_bytes_atomically(path, save_bytes(tensors, metadata={METADATA_KEY: json.dumps(header)}))


def upgrade_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Bring the metadata of a file written by an earlier version up to this one's meaning, in memory.

    Format 1 files written before ``features.normalisation`` existed were always normalised with ImageNet
    statistics, whatever the backbone: they get ``"imagenet"`` so that they score as they did. Files written
    before ``som.samples_per_epoch`` existed trained their maps on every patch every epoch: they get 0; before
    ``som.patch_window`` and ``som.patch_stride``, on single grid cells: they get 1 and 1.
    """
    if not isinstance(metadata, dict):
        return metadata
    config = metadata.get("config")
    if isinstance(config, dict) and isinstance(config.get("features"), dict):
        config["features"].setdefault("normalisation", "imagenet")
    if isinstance(config, dict) and isinstance(config.get("som"), dict):
        config["som"].setdefault("samples_per_epoch", 0)  # maps were trained on every patch, every epoch
        config["som"].setdefault("patch_window", 1)  # on single grid cells
        config["som"].setdefault("patch_stride", 1)
        config["som"].setdefault("search_dims", 0)  # exact distances to every node
        config["som"].setdefault("candidates", 8)
        config["som"].setdefault("min_epoch_share", 1.0)  # every epoch drew all its patches
    return metadata


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
    if not isinstance(metadata, dict):
        raise ModelFileError(path, "corrupt metadata (not a JSON object)")
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(path, f"unknown format {metadata.get('format')!r}")
    version = metadata.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(path, f"invalid format version {version!r} (expected a whole number from 1)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path, f"format version {version!r} is newer than this program reads ({FORMAT_VERSION})"
        )
    if version >= 2 and metadata.get("metadata_sha256") != metadata_digest(metadata):
        raise ModelFileError(path, "checksum mismatch: the metadata was edited or damaged")
    if metadata.get("sha256") != tensor_digest(tensors):
        raise ModelFileError(path, "checksum mismatch: the file was modified or damaged")
    return tensors, check_metadata(path, upgrade_metadata(metadata))


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_model(metadata: dict[str, Any], channels: int | None = None) -> list[tuple[str, str]]:
    """What a person wants to know of a model, as (field, text) rows: method, backbone, weights (flagged when
    random), the method's settings, thresholds and training summary. ``metadata`` is a file's metadata
    (:func:`read_model_file`) or :func:`model_metadata` of a loaded model."""
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
    summary = metadata.get("training_summary") or {}
    calibration = summary.get("calibration")
    rows.append(
        (
            "thresholds",
            (", ".join(f"{k} {_number(v)}" for k, v in thresholds.items()) or "none")
            + (f" (training images' threshold: {calibration})" if calibration and thresholds else ""),
        )
    )
    seconds = summary.get("seconds") or {}
    rows.append(
        (
            "training",
            f"{summary.get('n_images')} images of {summary.get('category')!r} on {summary.get('device')}"
            + (f"; {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}" if seconds else ""),
        )
    )
    return rows
