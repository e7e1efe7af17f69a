"""What every ``somad`` command shares: the progress bar, warnings, exit statuses and the fit options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from somad import (
    Cancelled,
    ConfigError,
    SomadConfig,
    SomadError,
    apply_options,
    fit_options,
    parse_layers,
    read_option,
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"somad: error: {message} (see {self.prog} --help)\n")


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


def _argument_type(doc) -> dict:
    """argparse keywords for an option of ``doc.kind``."""
    if doc.kind == "bool":
        return {"action": "store_true"}
    if doc.kind == "choice":
        return {"choices": doc.choices}
    if doc.kind in ("int", "seed", "optional_int"):
        return {"type": int}
    if doc.kind in ("float", "optional_float"):
        return {"type": float}
    return {}


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Every fit option that has a flag (:func:`somad.fit_options`), grouped as in the training form,
    plus ``--strict``."""
    defaults = SomadConfig()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in fit_options():
        doc = option.doc
        if doc.flag is None:
            continue
        if doc.group not in groups:
            groups[doc.group] = parser.add_argument_group(doc.group)
        default = read_option(defaults, option)
        if option.name == "features.layers":
            default = ",".join(map(str, default))
        help_text = doc.help.replace("\n", " ").replace("%", "%%")
        if default is not None and default is not False:
            help_text += f" (default: {default})"
        groups[doc.group].add_argument(
            doc.flag,
            dest=option.name.split(".")[-1],
            default=None if doc.kind == "bool" else default,
            help=help_text,
            **_argument_type(doc),
        )
    groups["Run"].add_argument("--strict", action="store_true", help="stop at the first unreadable image")


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
    values = {}
    for option in fit_options():
        if option.doc.flag is None:
            continue
        value = getattr(args, option.name.split(".")[-1])
        if option.doc.kind == "bool":
            value = bool(value)
        elif option.name == "features.layers":
            try:
                value = parse_layers(value)
            except ConfigError as err:
                raise SomadError(f"--layers: {err}") from err
        values[option.name] = value
    return apply_options(SomadConfig(), values).validate()


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
