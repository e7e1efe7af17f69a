"""Patch features from a timm backbone (Section 2.1 of SOMAD).

Stages at strides 4, 8 and 16 (``features_only``) are upsampled bilinearly to the finest stage's grid and
concatenated, so each cell of the grid holds one patch embedding; a seeded random subset of ``dims`` channels
is kept (the same indices at fit and score time: they are saved in the model).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from somad.bundled_weights import BUNDLED_PACKAGES, describe_origin, find_bundled, load_into, same_weights
from somad.config import FeatureConfig
from somad.errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_torchvision_ops_ready = False


def ensure_torchvision_ops() -> None:
    """Make ``import timm`` work where torchvision's compiled ops cannot load against the installed torch.

    timm imports torchvision, whose Python code registers fake kernels for ``torchvision::nms``; that fails
    when the ``_C`` library does not match torch (a CUDA-less torch with a stock torchvision wheel). Only then
    are the two operator schemas defined here, so the import succeeds; the ops themselves are never used.
    """
    global _torchvision_ops_ready
    if _torchvision_ops_ready:
        return
    _torchvision_ops_ready = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations)))
    for library in sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd")):
        try:
            torch.ops.load_library(str(library))
            return
        except (OSError, RuntimeError):
            break
    try:
        torch.ops.torchvision.nms.default  # noqa: B018 - already defined by someone else
        return
    except (AttributeError, RuntimeError):
        pass
    global _torchvision_library  # keep the registration alive for the process's lifetime
    _torchvision_library = torch.library.Library("torchvision", "DEF")
    _torchvision_library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


def _import_timm():
    ensure_torchvision_ops()
    import timm

    return timm


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load backbone weights from a safetensors file or a ``torch.save`` state dict (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with (
                warnings.catch_warnings()
            ):  # torch's own notes on foreign pickles: the error below says it all
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise WeightsError(f"{path}: cannot read weights ({type(err).__name__}: {first_line})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state


def _create_backbone(
    config: FeatureConfig, recorded_origin: str | None = None
) -> tuple[torch.nn.Module, str]:
    """Build the timm feature extractor; returns it and a description of where its weights came from.

    Weights are resolved in this order: ``config.weights`` (a file), ``config.random_init``, the ImageNet
    weights bundled with the program when the backbone has them (:mod:`somad.bundled_weights`), timm's hub
    (a download, or its local cache); failing all, a one-line error names the ways out. With random or file
    weights, ResNets get ``zero_init_last=config.zero_init_last``: timm's default (True) zeroes the last
    normalisation of every residual block, so an untrained network passes only its shortcuts.
    """
    timm = _import_timm()
    kwargs: dict = {"features_only": True, "out_indices": tuple(sorted(config.layers))}
    if not timm.is_model(config.backbone):
        raise WeightsError(f"unknown backbone {config.backbone!r}: expected a timm model name")
    from_hub = (recorded_origin or "").startswith("timm-pretrained:")  # a model fitted on the hub's weights
    bundled = None if config.random_init or config.weights or from_hub else find_bundled(config.backbone)
    offline_ok = config.random_init or bool(config.weights) or bundled is not None
    try:
        if offline_ok:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)  # random-init weights are reproduced from the seed at load
                model = _create_untrained(timm, config, kwargs)
        else:
            _check_hub_reachable(config)
            model = timm.create_model(config.backbone, pretrained=True, **kwargs)
    except WeightsError:
        raise
    except Exception as err:  # hub failures surface as many exception types
        if isinstance(err, IndexError):
            raise WeightsError(_layers_error(timm, config)) from None
        if offline_ok:
            raise WeightsError(f"cannot build backbone {config.backbone!r}: {err}") from err
        raise _offline_error(config, err) from err
    if config.weights:
        state = read_state_dict(config.weights)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise WeightsError(
                f"{config.weights}: does not match backbone {config.backbone!r} "
                f"({len(result.missing_keys)} missing tensors, e.g. {result.missing_keys[0]})"
            )
        return model, f"file:{Path(config.weights).name}"
    if config.random_init:
        return model, "random-init"
    if bundled is not None:
        load_into(model, bundled, timm)
        return model, bundled.origin
    tag = getattr(model, "pretrained_cfg", {}).get("tag") or "default"
    return model, f"timm-pretrained:{config.backbone}.{tag}"


def _layers_error(timm, config: FeatureConfig) -> str:
    """What is wrong with ``config.layers`` for the backbone: the stages it has."""
    try:
        stages = len(timm.create_model(config.backbone, pretrained=False, features_only=True).feature_info)
        have = f"it has stages 0 to {stages - 1}"
    except Exception:
        have = "its stages differ"
    return f"layers {','.join(map(str, config.layers))}: not stages of backbone {config.backbone!r} ({have})"


def _check_runs(backbone: torch.nn.Module, config: FeatureConfig) -> None:
    """A one-line error, before any work, for a backbone that cannot take ``image_size`` inputs (vision
    transformers with a fixed input size, inputs smaller than its total stride)."""
    device = next(backbone.parameters()).device
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, config.image_size, config.image_size, device=device))
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WeightsError(
            f"backbone {config.backbone!r} cannot give patch features at {config.image_size} px ({reason})"
        ) from None


def normalisation(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and standard deviation the backbone's weights were trained with (timm's pretrained
    configuration: ImageNet statistics for most, 0.5 for the TensorFlow-trained EfficientNet-Lites)."""
    timm = _import_timm()
    try:
        cfg = timm.get_pretrained_cfg(backbone)
    except Exception:  # names without a pretrained configuration
        cfg = None
    mean = tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(cfg, "std", None) or IMAGENET_STD)
    return mean, std


def _create_untrained(timm, config: FeatureConfig, kwargs: dict) -> torch.nn.Module:
    try:
        return timm.create_model(
            config.backbone, pretrained=False, zero_init_last=config.zero_init_last, **kwargs
        )
    except TypeError:  # architectures without residual zero-init
        return timm.create_model(config.backbone, pretrained=False, **kwargs)


def _check_hub_reachable(config: FeatureConfig) -> None:
    """Fail at once, instead of after minutes of retries, when the weights are neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return  # timm reads the local cache only and fails quickly by itself
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        cached = os.environ.copy()
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True
        try:
            timm = _import_timm()
            timm.create_model(config.backbone, pretrained=True, features_only=True)
        except Exception:
            raise _offline_error(config, err) from err
        finally:
            os.environ.clear()
            os.environ.update(cached)
            constants.HF_HUB_OFFLINE = False


def _offline_error(config: FeatureConfig, err: Exception) -> WeightsError:
    reason = "no network connection" if isinstance(err, OSError) else type(err).__name__
    return WeightsError(
        f"cannot download pretrained weights for {config.backbone!r} ({reason}); "
        "offline? pass --weights FILE (safetensors or state dict), use a backbone with bundled weights "
        f"({', '.join(BUNDLED_PACKAGES)}) or --random-init"
    )


#: Memory of a backbone and its activations while extracting features (Wide-ResNet-50-2 at 224 px, batch 4).
BACKBONE_BYTES = 600 * 2**20


def estimated_grid(config: FeatureConfig) -> tuple[int, int]:
    """The stride-4 patch grid of ``config``'s images, as an estimate before any network is built (true of
    ResNets and ConvNeXts at their first stage)."""
    side = -(-config.image_size // 4)
    return side, side


@dataclass(frozen=True)
class FeatureLayout:
    """Where the kept channels come from: per-stage channel counts and the sorted global channel indices."""

    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    channel_indices: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.channel_indices.size)


def draw_channel_indices(total: int, dims: int, seed: int) -> np.ndarray:
    """``dims`` distinct channel indices out of ``total``, sorted, from a generator seeded with ``seed``."""
    if dims >= total:
        return np.arange(total, dtype=np.int64)
    generator = torch.Generator().manual_seed(int(seed))
    picked = torch.randperm(total, generator=generator)[:dims]
    return np.sort(picked.numpy()).astype(np.int64)


class FeatureExtractor:
    """A frozen backbone that turns RGB uint8 images into (N, dims, gh, gw) float32 patch features."""

    def __init__(
        self,
        config: FeatureConfig,
        device: torch.device,
        channel_indices: np.ndarray | None = None,
        recorded_origin: str | None = None,
    ):
        """``recorded_origin``: where a fitted model's weights came from; the weights resolved now must be the
        same (:class:`WeightsError` otherwise), so a model never scores on other features than it learned."""
        self.config = config
        self.device = device
        self.backbone, self.weights_origin = _create_backbone(config, recorded_origin)
        if recorded_origin is not None and not same_weights(recorded_origin, self.weights_origin):
            raise WeightsError(
                f"the model was fitted on {describe_origin(recorded_origin)}, but the backbone's weights here "
                f"are {describe_origin(self.weights_origin)}; install the same weights to score with it"
            )
        self.backbone.eval().to(device)
        _check_runs(self.backbone, config)
        info = self.backbone.feature_info
        channels = tuple(int(c) for c in info.channels())
        strides = tuple(int(r) for r in info.reduction())
        total = sum(channels)
        if channel_indices is None:
            channel_indices = draw_channel_indices(total, config.dims, config.seed)
        channel_indices = np.asarray(channel_indices, dtype=np.int64)
        if channel_indices.size and (channel_indices.min() < 0 or channel_indices.max() >= total):
            raise WeightsError(f"channel indices out of range for {config.backbone!r} ({total} channels)")
        self.layout = FeatureLayout(channels, strides, channel_indices)
        offsets = np.cumsum((0, *channels))
        self._per_stage = [
            torch.as_tensor(
                channel_indices[(channel_indices >= lo) & (channel_indices < hi)] - lo, device=device
            )
            for lo, hi in itertools.pairwise(offsets)
        ]
        mean, std = (
            normalisation(config.backbone)
            if config.normalisation == "backbone"
            else (IMAGENET_MEAN, IMAGENET_STD)
        )
        mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self._mean, self._std = mean, std
        self._grid_shape: tuple[int, int] | None = None

    @property
    def normalisation_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (1, 3, 1, 1) mean and standard deviation inputs are normalised with, after scaling to 0..1."""
        return self._mean, self._std

    @property
    def kept_channels(self) -> list[torch.Tensor]:
        """Per stage, the indices of its channels kept in the patch features (see :func:`stack_stages`)."""
        return list(self._per_stage)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Height and width of the patch grid, measured once with a forward pass (stems round differently)."""
        if self._grid_shape is None:
            with torch.inference_mode():
                probe = torch.zeros(1, 3, self.config.image_size, self.config.image_size, device=self.device)
                shapes = [f.shape[-2:] for f in self.backbone(probe)]
            self._grid_shape = tuple(shapes[int(np.argmin(self.layout.stage_strides))])
        return self._grid_shape  # type: ignore[return-value]

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Resize (no crop) to ``image_size`` squared and normalise with the backbone's statistics."""
        size = self.config.image_size
        batch = np.stack(
            [
                cv2.resize(
                    img,
                    (size, size),
                    interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR,
                )
                for img in images
            ]
        )
        tensor = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return (tensor - self._mean) / self._std

    def __call__(self, images: list[np.ndarray]) -> torch.Tensor:
        """Patch features of a batch of RGB uint8 images: (B, dims, gh, gw) on the extractor's device."""
        return self.patches(self.stages(images))

    @torch.inference_mode()
    def stages(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """The backbone's outputs of the configured stages, shallow to deep, for a batch of RGB uint8 images."""
        return list(self.backbone(self.preprocess(images)))

    @torch.inference_mode()
    def patches(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """Patch features (B, dims, gh, gw) from :meth:`stages` (see :func:`stack_stages`)."""
        return stack_stages(stages, self._per_stage, int(np.argmin(self.layout.stage_strides)))


def stack_stages(stages: Sequence[torch.Tensor], keep: Sequence[torch.Tensor], finest: int) -> torch.Tensor:
    """The ``keep`` channels of every stage, upsampled bilinearly to stage ``finest``'s grid and concatenated:
    patch features (B, dims, gh, gw). One definition for the extractor and the exported graph."""
    grid = stages[finest].shape[-2:]
    parts = []
    for stage, kept in zip(stages, keep, strict=True):
        if kept.numel() == 0:
            continue
        stage = stage.index_select(1, kept)
        if stage.shape[-2:] != grid:
            stage = F.interpolate(stage, size=grid, mode="bilinear", align_corners=False)
        parts.append(stage)
    return torch.cat(parts, dim=1).float()


def configure_threads() -> None:
    """Use every core for intra-op parallelism unless the user set ``OMP_NUM_THREADS``."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def prepare_backbone_library() -> None:
    """Import timm (and its torchvision guard) now.

    Its first import takes seconds of mostly GIL-holding work; a window calls this at start-up so that a
    fit started later in a worker thread does not stall the interface.
    """
    _import_timm()
