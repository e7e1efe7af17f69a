"""What every ``somad`` command shares: the progress bar, warnings, exit statuses and the fit options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.bundled_weights import BUNDLED_PACKAGES
from core.config import SomadConfig
from core.errors import Cancelled, SomadError

RANDOM_INIT_NOTE = (
    "random-init backbone: features are untrained, figures are not comparable to pretrained ones"
)


class TerminalProgress:
    """A ``progress(stage, done, total)`` callback drawing one tqdm bar per stage on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=f"{stage:<11}", unit="", leave=True, dynamic_ncols=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def warn(err: SomadError) -> None:
    print(f"somad: warning: {err}", file=sys.stderr)


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    d = SomadConfig()
    f = parser.add_argument_group("features")
    f.add_argument(
        "--backbone",
        default=d.features.backbone,
        help="timm model name (default: %(default)s; ImageNet weights installed for "
        f"{', '.join(BUNDLED_PACKAGES)}, others from timm's hub)",
    )
    f.add_argument(
        "--layers",
        default=",".join(map(str, d.features.layers)),
        help="feature stages (default: %(default)s)",
    )
    f.add_argument("--image-size", type=int, default=d.features.image_size, help="input side in pixels")
    f.add_argument("--dims", type=int, default=d.features.dims, help="random channel subset size")
    f.add_argument("--weights", help="backbone weights file (safetensors or a torch state dict)")
    f.add_argument(
        "--random-init", action="store_true", help="untrained backbone (offline use; flagged in reports)"
    )
    f.add_argument(
        "--zero-init-last",
        action="store_true",
        help="with --random-init: zero each residual block's last norm (timm's default)",
    )
    s = parser.add_argument_group("SOM and statistics")
    s.add_argument("--som-size", type=int, default=d.som.rows, help="K for a K x K map")
    s.add_argument("--epochs", type=int, default=d.som.epochs, help="full passes over the training patches")
    s.add_argument("--som-init", choices=("positional", "pca", "random"), default=d.som.init)
    s.add_argument("--lambda", dest="lam", type=float, default=d.statistics.lam, help="covariance ridge term")
    s.add_argument(
        "--shrinkage",
        type=float,
        default=d.statistics.shrinkage,
        help="prior samples of the pooled covariance",
    )
    s.add_argument("--k", type=int, default=d.scoring.k, help="nearest nodes searched per patch")
    s.add_argument("--sigma", type=float, default=d.scoring.sigma, help="map smoothing (pixels at 224)")
    g = parser.add_argument_group("run")
    g.add_argument("--max-train", type=int, help="use at most this many training images")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable image")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    m = parser.add_argument_group("method")
    m.add_argument(
        "--method",
        default="somad",
        help="somad (default), padim, patchcore, or an image-level detector: ocsvm, iforest, kde, lof, elliptic",
    )
    m.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the method, repeatable (e.g. coreset_ratio=0.05; `somad info` lists a model's)",
    )


def config_from_args(args: argparse.Namespace) -> SomadConfig:
    """Build and validate the configuration named by ``somad fit``'s options."""
    try:
        layers = tuple(int(x) for x in str(args.layers).split(",") if x.strip())
    except ValueError as err:
        raise SomadError(f"--layers: expected comma-separated integers, got {args.layers!r}") from err
    return (
        SomadConfig()
        .with_changes(
            features={
                "backbone": args.backbone,
                "layers": layers,
                "image_size": args.image_size,
                "dims": args.dims,
                "seed": args.seed,
                "weights": args.weights,
                "random_init": args.random_init,
                "zero_init_last": args.zero_init_last,
            },
            som={
                "rows": args.som_size,
                "cols": args.som_size,
                "epochs": args.epochs,
                "init": args.som_init,
                "seed": args.seed,
            },
            statistics={"lam": args.lam, "shrinkage": args.shrinkage},
            scoring={"k": args.k, "sigma": args.sigma},
            device=args.device,
            max_train=args.max_train,
        )
        .validate()
    )


def method_options_from_args(items: Sequence[str]) -> dict[str, str]:
    """``["coreset_ratio=0.05", ...]`` -> ``{"coreset_ratio": "0.05"}``; the method converts and checks them."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SomadError(f"--option: expected KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    return options


def run_command(handler, args: argparse.Namespace, *, cancelled: str = "cancelled") -> int:
    """Run one command's ``handler(args, progress)`` with the exit statuses of every ``somad`` command:
    0 done, 2 bad input (one line on stderr naming the file and the problem), 130 cancelled or interrupted."""
    progress = TerminalProgress(sys.stderr.isatty())
    try:
        return handler(args, progress)
    except (Cancelled, KeyboardInterrupt):
        progress.close()
        print(f"somad: {cancelled}", file=sys.stderr)
        return 130
    except SomadError as err:
        progress.close()
        print(f"somad: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        progress.close()
        where = f"{err.filename}: " if err.filename else ""
        print(f"somad: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
