"""The fit options, described once (on the config's fields) for the command line and the training form: each
option's name, the config fields it writes and how it is offered; reading, writing and parsing them."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from somad.config import SomadConfig
from somad.errors import ConfigError
from somad.option_doc import OPTION_GROUPS, OptionDoc


@dataclass(frozen=True)
class FitOption:
    """One option a person sets before a fit: its name (``section.key``, or a top-level name), the config fields
    it writes (several for a shared one such as ``seed``) and how it is offered (:class:`OptionDoc`)."""

    name: str
    targets: tuple[str, ...]
    doc: OptionDoc


#: Options that write several fields at once.
SHARED_OPTIONS = (
    FitOption(
        "som_size",
        ("som.rows", "som.cols"),
        OptionDoc(
            "SOM size",
            "K for a K x K map; 0: Auto, sized to the training patches (the default).",
            "SOM",
            "int",
            0,
            512,
            special="Auto",
            flag="--som-size",
            form=False,
        ),
    ),
    FitOption(
        "seed",
        ("features.seed", "som.seed"),
        OptionDoc(
            "Seed",
            "Seed of the feature-channel draw and of the SOM initialisation.",
            "Run",
            "seed",
            0,
            2**31 - 1,
            flag="--seed",
        ),
    ),
)


def fit_options() -> tuple[FitOption, ...]:
    """Every described option, grouped as :data:`OPTION_GROUPS` and in field order within a group."""
    found: list[FitOption] = []
    for section in fields(SomadConfig):
        kind = section.default_factory if section.default_factory is not MISSING else None  # type: ignore[misc]
        if kind is not None and hasattr(kind, "__dataclass_fields__"):
            found += [
                FitOption(f"{section.name}.{f.name}", (f"{section.name}.{f.name}",), f.metadata["doc"])
                for f in fields(kind)
                if "doc" in f.metadata
            ]
        elif "doc" in section.metadata:
            found.append(FitOption(section.name, (section.name,), section.metadata["doc"]))
    found += SHARED_OPTIONS
    return tuple(sorted(found, key=lambda o: OPTION_GROUPS.index(o.doc.group)))


def read_option(config: SomadConfig, option: FitOption) -> Any:
    """The option's value in ``config`` (its first target's)."""
    value: Any = config
    for part in option.targets[0].split("."):
        value = getattr(value, part)
    return value


def apply_options(config: SomadConfig, values: dict[str, Any]) -> SomadConfig:
    """A copy of ``config`` with ``values`` (keyed by :attr:`FitOption.name`) written into every target; not
    validated. Unknown names are an error."""
    by_name = {o.name: o for o in fit_options()}
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in values.items():
        if name not in by_name:
            raise ConfigError(f"unknown option {name!r}")
        for target in by_name[name].targets:
            section, _, key = target.rpartition(".")
            if section:
                sections.setdefault(section, {})[key] = value
            else:
                top[target] = value
    return config.with_changes(**sections, **top)


def parse_layers(text: str) -> tuple[int, ...]:
    """``"1, 2, 3"`` (commas, semicolons or spaces) -> ``(1, 2, 3)``; :class:`ConfigError` otherwise."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise ConfigError("layers: give at least one stage index, e.g. 1, 2, 3")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"layers: expected stage indices like 1, 2, 3, got {text!r}") from None
