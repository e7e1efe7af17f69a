"""ONNX export: one graph from images to anomaly maps and scores, in the same raw units as
:meth:`somad.model.FittedModel.score`, and the check of an exported graph against the Python path.

The graph's contract (also in its metadata):

- input ``image``: uint8 (N, S, S, 3) RGB at the model's input size ``S`` (``image_size``); resize images to
  it with :func:`resize_for_export`, the resize the Python path uses;
- outputs ``anomaly_map``: float32 (N, S, S), and ``score``: float32 (N,), the map's maximum.

Inside: the backbone's normalisation, the backbone, the kept channels of each stage upsampled to the finest
grid, the method's head (SOMAD: the k nearest nodes by Euclidean distance, Eq. 1, and the smallest Mahalanobis
distance among them, Eq. 3; PaDiM: each position's Gaussian; PatchCore: the nearest memory-bank patch), the
bilinear upsampling and the Gaussian smoothing of :mod:`somad.maps`. Image-level methods are refused. The map is
at ``S`` x ``S``: the Python path resizes it to each image's own size, which can lower the maximum slightly.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from somad.aggregation import aggregate
from somad.atomic import write_bytes_atomically
from somad.errors import ConfigError, DataError
from somad.features import stack_stages
from somad.maps import REFERENCE_SIZE, gaussian_kernel1d
from somad.model import FittedModel

#: Largest relative difference (of the map's range) the check accepts between the graph and the Python path.
TOLERANCE = 1e-4
OPSET = 17


def resize_for_export(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image resized to ``size`` x ``size`` as the feature extractor resizes it."""
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=interpolation))


class _SomadHead(torch.nn.Module):
    """Eqs. 1 and 3 on aggregated patches: the k Euclidean-nearest nodes with hits, the smallest Mahalanobis."""

    def __init__(self, detector: Any):
        super().__init__()
        search, valid = detector.node_search()
        valid = valid.cpu()
        som = detector.config.som
        self.window, self.stride, self.k = som.patch_window, som.patch_stride, detector.config.scoring.k
        self.search = copy.deepcopy(search).cpu()
        self.register_buffer("means", detector.gaussians.means.cpu()[valid].float())
        self.register_buffer("factors", detector.gaussians.inverse_cholesky.cpu()[valid].float())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.window > 1 or self.stride > 1:
            x = F.avg_pool2d(
                patches, self.window, stride=self.stride, padding=self.window // 2, count_include_pad=False
            )
        else:
            x = patches
        n, d, gh, gw = x.shape
        flat = x.permute(0, 2, 3, 1).reshape(-1, d)
        nearest = self.search(flat, self.k)
        centred = flat.unsqueeze(1) - self.means[nearest]  # (P, k, d)
        z = torch.einsum("pkij,pkj->pki", self.factors[nearest], centred)
        return (z * z).sum(-1).min(1).values.clamp_min(0).sqrt().view(n, gh, gw)


class _PadimHead(torch.nn.Module):
    def __init__(self, detector: Any):
        super().__init__()
        self.register_buffer("means", detector.gaussians.means.cpu().float())
        self.register_buffer("factors", detector.gaussians.inverse_cholesky.cpu().float())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        n, d, gh, gw = patches.shape
        centred = patches.permute(0, 2, 3, 1).reshape(n, gh * gw, d) - self.means
        z = torch.einsum("pij,npj->npi", self.factors, centred)
        return (z * z).sum(-1).clamp_min(0).sqrt().view(n, gh, gw)


class _PatchcoreHead(torch.nn.Module):
    def __init__(self, detector: Any):
        super().__init__()
        self.window, self.stride = detector.options["neighbourhood"], detector.options["stride"]
        self.register_buffer("bank", detector.bank.cpu().float())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = aggregate(patches.permute(0, 2, 3, 1), self.window, self.stride)
        n, gh, gw, d = x.shape
        flat = x.reshape(-1, d)
        squared = (
            (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ self.bank.T + (self.bank * self.bank).sum(1)
        )
        return squared.min(1).values.clamp_min(0).sqrt().view(n, gh, gw)


HEADS = {"somad": _SomadHead, "padim": _PadimHead, "patchcore": _PatchcoreHead}


class ScoringGraph(torch.nn.Module):
    """uint8 (N, S, S, 3) RGB -> anomaly maps (N, S, S) and scores (N,), as the Python path computes them."""

    def __init__(self, model: FittedModel):
        super().__init__()
        if model.method not in HEADS:
            raise ConfigError(
                f"{model.label} gives image scores only and cannot be exported; export SOMAD, PaDiM or PatchCore"
            )
        extractor = model.extractor
        self.backbone = extractor.backbone.cpu().eval()
        mean, std = extractor.normalisation_tensors
        self.register_buffer("mean", mean.cpu())
        self.register_buffer("std", std.cpu())
        for i, keep in enumerate(extractor.kept_channels):
            self.register_buffer(f"keep{i}", keep.cpu())
        self.finest = int(np.argmin(extractor.layout.stage_strides))
        self.head = HEADS[model.method](model.detector)
        self.size = model.config.features.image_size
        sigma = model.config.scoring.sigma * self.size / REFERENCE_SIZE
        self.register_buffer("kernel", gaussian_kernel1d(sigma, torch.device("cpu")) if sigma > 0 else None)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        stages = list(self.backbone(x))
        keep = [getattr(self, f"keep{i}") for i in range(len(stages))]
        scores = self.head(stack_stages(stages, keep, self.finest))
        maps = F.interpolate(
            scores.unsqueeze(1), size=(self.size, self.size), mode="bilinear", align_corners=False
        )
        if self.kernel is not None:
            r = self.kernel.numel() // 2
            maps = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), self.kernel.view(1, 1, 1, -1))
            maps = F.conv2d(F.pad(maps, (0, 0, r, r), mode="reflect"), self.kernel.view(1, 1, -1, 1))
        maps = maps.squeeze(1)
        return maps, maps.amax(dim=(1, 2))


def export_metadata(model: FittedModel, model_digest: str | None = None) -> dict[str, str]:
    """The graph's metadata properties: the contract, the model's description and threshold."""
    threshold = None
    if model.thresholds:
        from somad.decision import preferred_threshold

        threshold = preferred_threshold(model.thresholds)
    return {
        "format": "somad-inspector-onnx",
        "method": model.method,
        "backbone": model.config.features.backbone,
        "weights_origin": model.weights_origin,
        "image_size": str(model.config.features.image_size),
        "threshold": "" if threshold is None else repr(float(threshold)),
        "model_sha256": model_digest or "",
        "input": "image: uint8 (N, image_size, image_size, 3) RGB",
        "outputs": "anomaly_map: float32 (N, image_size, image_size) raw units; score: float32 (N,) its maximum",
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
    }


def _optional(name: str):
    """The optional package ``name`` (onnx, onnxruntime), or a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"exporting needs {name}: pip install onnx onnxruntime") from None


def export_onnx(model: FittedModel, path: str | Path, model_digest: str | None = None) -> Path:
    """Write ``model`` as one ONNX graph (see the module's contract) to ``path``, atomically."""
    import io

    onnx = _optional("onnx")

    graph = ScoringGraph(model).eval()
    size = graph.size
    example = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python branches that are constant here
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            input_names=["image"],
            output_names=["anomaly_map", "score"],
            dynamic_axes={"image": {0: "N"}, "anomaly_map": {0: "N"}, "score": {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in export_metadata(model, model_digest).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return write_bytes_atomically(path, proto.SerializeToString())


@dataclass
class ExportCheck:
    """How an exported graph's maps and scores compare with the Python path's on the same images."""

    n_images: int
    max_abs_map: float
    max_rel_map: float  # of each map's range
    max_abs_score: float
    max_rel_score: float
    verdicts_agree: bool
    threshold: float | None

    @property
    def agrees(self) -> bool:
        return self.max_rel_map <= TOLERANCE and self.max_rel_score <= TOLERANCE and self.verdicts_agree


def onnx_session(path: str | Path):
    """An onnxruntime session for an exported graph; a :class:`DataError` naming the file otherwise."""
    onnxruntime = _optional("onnxruntime")
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise DataError(path, f"not a loadable ONNX graph ({type(err).__name__})") from None


#: The OpenVINO CPU plugin's precision the scores need (it may lower it by default on some processors).
PRECISION_HINT = {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_package():
    """The ``openvino`` package, or a one-line error saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError("OpenVINO models need OpenVINO: pip install openvino") from None
    return openvino


def ir_runner(path: str | Path):
    """(input element type, input shape, ``run(batch) -> (maps, scores)``) of an IR compiled for the CPU in
    float32; a :class:`DataError` naming the file when it does not load."""
    openvino = openvino_package()
    try:
        compiled = openvino.compile_model(str(path), "CPU", PRECISION_HINT)
    except Exception as err:
        raise DataError(path, f"not a loadable OpenVINO model ({type(err).__name__})") from None
    port = compiled.inputs[0]
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    kind = "tensor(uint8)" if port.get_element_type() == openvino.Type.u8 else str(port.get_element_type())

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = compiled(batch)
        return np.asarray(out[compiled.outputs[0]]), np.asarray(out[compiled.outputs[1]])

    return kind, shape, run


def graph_runner(path: str | Path):
    """(input type, input shape, ``run(batch) -> (maps, scores)``) of an exported graph: ONNX through
    onnxruntime, OpenVINO IR (``.xml``) through OpenVINO in float32."""
    if Path(path).suffix == ".xml":
        return ir_runner(path)
    session = onnx_session(path)
    port = session.get_inputs()[0]

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = session.run(None, {"image": batch})
        return maps, scores

    return port.type, list(port.shape), run


def check_export(model: FittedModel, onnx_path: str | Path, images: list[np.ndarray]) -> ExportCheck:
    """Score ``images`` (RGB uint8, any size) with the graph (ONNX, or OpenVINO IR) and with the Python path at
    the model's input size; the largest differences and whether every verdict at the model's threshold agrees."""
    kind, shape, run = graph_runner(onnx_path)
    size = model.config.features.image_size
    if kind != "tensor(uint8)" or list(shape[1:]) != [size, size, 3]:
        raise DataError(
            onnx_path,
            f"its input is {kind} {shape}, the model needs uint8 (N, {size}, {size}, 3)",
        )
    resized = [resize_for_export(im, size) for im in images]
    python = model.score(resized)
    abs_map = rel_map = abs_score = rel_score = 0.0
    threshold = None
    if model.thresholds:
        from somad.decision import preferred_threshold

        threshold = preferred_threshold(model.thresholds)
    agree = True
    for image, result in zip(resized, python, strict=True):
        maps, scores = run(image[None])
        span = max(float(result.anomaly_map.max() - result.anomaly_map.min()), 1e-12)
        diff = float(np.abs(maps[0] - result.anomaly_map).max())
        abs_map, rel_map = max(abs_map, diff), max(rel_map, diff / span)
        sdiff = abs(float(scores[0]) - result.score)
        abs_score, rel_score = max(abs_score, sdiff), max(rel_score, sdiff / max(abs(result.score), 1e-12))
        if threshold is not None and (float(scores[0]) >= threshold) != (result.score >= threshold):
            agree = False
    return ExportCheck(len(images), abs_map, rel_map, abs_score, rel_score, agree, threshold)
