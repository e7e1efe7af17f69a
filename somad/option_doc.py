"""How an option is offered to a person: the description that config fields carry as metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The groups fit options are shown in, in order.
OPTION_GROUPS = ("Features", "SOM", "Statistics and scoring", "Run")


@dataclass(frozen=True)
class OptionDoc:
    """How a fit option is offered to a person, by the command line and by the window's training form.

    ``kind`` says how it is edited: int, float, bool, choice, text, layers, backbone, file, device, seed,
    optional_int or optional_float (``special`` names the unset value of optional ones). ``flag`` is its
    command-line flag (none: not on the command line); ``form`` whether the training form shows it.
    """

    label: str
    help: str
    group: str
    kind: str
    minimum: float = 0
    maximum: float = 0
    step: float = 1
    decimals: int = 0
    choices: tuple[str, ...] = ()
    special: str = ""
    flag: str | None = None
    form: bool = True
    suggestions: tuple[str, ...] = ()


def option_doc(
    label: str, help: str, group: str, kind: str, *bounds: float, **details: Any
) -> dict[str, OptionDoc]:
    """Field metadata describing an option; ``bounds`` are minimum, maximum, step and decimals, as many as given."""
    return {"doc": OptionDoc(label, help, group, kind, *bounds, **details)}
