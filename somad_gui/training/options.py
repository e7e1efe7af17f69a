"""The fitting options the training form shows, as data (no Qt): the core describes them once
(:func:`somad.fit_options`, shared with the command line); the form is built from this table and converts
values back into a config.
"""

from __future__ import annotations

import re
from typing import Any

import somad

#: A field of the training form: the core's description of a fit option (``name``, ``targets``, ``doc``).
Option = somad.FitOption

_FIT_OPTIONS = {o.name: o for o in somad.fit_options()}
OPTIONS: tuple[Option, ...] = tuple(o for o in _FIT_OPTIONS.values() if o.doc.form)
GROUPS: tuple[str, ...] = somad.OPTION_GROUPS
BACKBONES: tuple[str, ...] = _FIT_OPTIONS["features.backbone"].doc.suggestions


#: Command-line words the core's messages may use, as the window's controls say them.
_CONTROL_WORDS = {
    **{o.doc.flag: f"“{o.doc.label}”" for o in _FIT_OPTIONS.values() if o.doc.flag and o.doc.form},
    "--som-size": "“SOM rows” and “SOM cols”",
    "--weights FILE": "a “Weights file”",
    "--overwrite": "another name (the file exists)",
    "--threshold": "the threshold slider",
}
_FLAG = re.compile(r"--[a-z][a-z0-9-]*(?: FILE)?")


def window_words(text: str) -> str:
    """A core message with its command-line flags named as the window's controls (``--dims`` -> “Feature dims”)."""

    def control(match: re.Match) -> str:
        flag = match.group(0)
        return _CONTROL_WORDS.get(flag) or _CONTROL_WORDS.get(flag.removesuffix(" FILE"), flag)

    return _FLAG.sub(control, text)


def get_value(config: Any, option: Option) -> Any:
    """The option's current value in ``config``."""
    return somad.read_option(config, option)


def apply_values(config: Any, values: dict[str, Any]) -> Any:
    """A copy of ``config`` with the form's values (keyed by option name) written in; not validated."""
    return somad.apply_options(config, values)


def parse_layers(text: str) -> tuple[int, ...]:
    """'1, 2, 3' -> (1, 2, 3); raises ValueError on anything else."""
    return somad.parse_layers(text)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def config_key(option: Option) -> str:
    """The dotted ``SomadConfig`` option a form field edits (a shared field: its first target)."""
    return option.targets[0]


def visible_options(method_info: Any) -> set[str]:
    """Names of the form's fields that matter to a method (a ``somad.METHODS`` entry); the rest are hidden."""
    return {option.name for option in OPTIONS if method_info.applies(config_key(option))}


def method_option_kind(spec: Any) -> str:
    """How a method's own option (``somad.methods.OptionSpec``) is edited: bool, choice, int or text.

    Text fields take floats and keyword values (KDE's "scott"); :meth:`MethodInfo.validate` parses them.
    """
    if spec.kind is bool:
        return "bool"
    if spec.choices is not None:
        return "choice"
    if spec.kind is int and not spec.keywords:
        return "int"
    return "text"
