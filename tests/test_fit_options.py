"""The fit options are described once, on the config's fields; the command line's flags come from there."""

from __future__ import annotations

import argparse

import pytest

import somad
from somad.errors import ConfigError
from somad_cli.common import add_fit_options, config_from_args


def test_every_config_field_a_person_sets_is_described():
    names = {o.name for o in somad.fit_options()}
    for required in (
        "features.backbone",
        "features.layers",
        "som.epochs",
        "statistics.lam",
        "scoring.k",
        "seed",
    ):
        assert required in names
    for option in somad.fit_options():
        assert option.doc.help and option.doc.label and option.doc.group in somad.OPTION_GROUPS
        assert somad.read_option(somad.SomadConfig(), option) is not None or option.doc.kind.startswith(
            ("optional", "file")
        )


def test_shared_options_write_every_target():
    config = somad.apply_options(somad.SomadConfig(), {"seed": 7, "som_size": 9})
    assert config.features.seed == config.som.seed == 7
    assert config.som.rows == config.som.cols == 9
    with pytest.raises(ConfigError, match="unknown option"):
        somad.apply_options(somad.SomadConfig(), {"bogus": 1})


def test_parse_layers():
    assert somad.parse_layers("1, 2;3") == (1, 2, 3)
    with pytest.raises(ConfigError, match="layers"):
        somad.parse_layers("1, x")


NON_DEFAULT = {
    "int": "7",
    "seed": "7",
    "optional_int": "7",
    "float": "0.25",
    "optional_float": "2.5",
    "backbone": "resnet18",
    "layers": "2,3",
    "file": "weights.safetensors",
    "device": "cpu",
}


def test_every_flag_reaches_its_config_field():
    parser = argparse.ArgumentParser()
    add_fit_options(parser)
    for option in somad.fit_options():
        doc = option.doc
        if doc.flag is None:
            continue
        if doc.kind == "bool":
            argv = [doc.flag]
            expected = True
        elif doc.kind == "choice":
            expected = next(c for c in doc.choices if c != somad.read_option(somad.SomadConfig(), option))
            argv = [doc.flag, expected]
        else:
            value = NON_DEFAULT[doc.kind]
            if doc.kind == "int":
                value = str(max(int(doc.minimum), min(int(doc.maximum), 64)))  # in range: 64 (or its bound)
            argv = [doc.flag, value]
            expected = somad.parse_layers(argv[1]) if doc.kind == "layers" else type_of(doc.kind)(argv[1])
        config = config_from_args(parser.parse_args(argv))
        assert somad.read_option(config, option) == expected, option.name
        for target in option.targets[1:]:
            section, key = target.split(".")
            assert getattr(getattr(config, section), key) == expected, target


def type_of(kind: str):
    return {"int": int, "seed": int, "optional_int": int, "float": float, "optional_float": float}.get(
        kind, str
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"statistics": {"lam": float("nan")}}, "statistics.lam"),
        ({"scoring": {"sigma": float("inf")}}, "scoring.sigma"),
        ({"statistics": {"shrinkage": float("nan")}}, "statistics.shrinkage"),
        ({"features": {"dims": "16"}}, "features.dims"),
        ({"features": {"image_size": True}}, "features.image_size"),
        ({"som": {"epochs": 2.5}}, "som.epochs"),
        ({"features": {"layers": (1, "2")}}, "features.layers"),
        ({"max_train": 1.5}, "max_train"),
        ({"device": 0}, "device"),
    ],
)
def test_every_field_is_checked_for_type_and_finiteness(changes, message):
    with pytest.raises(ConfigError, match=message):
        somad.SomadConfig().with_changes(**changes).validate()


def test_numpy_numbers_are_numbers():
    import numpy as np

    config = somad.SomadConfig().with_changes(
        features={"dims": np.int64(16)}, statistics={"lam": np.float32(0.1)}
    )
    assert config.validate() is config


@pytest.mark.parametrize("changes", [{"bogus": {}}, {"features": {"nope": 1}}, {"som": 3}])
def test_unknown_or_malformed_changes_are_config_errors(changes):
    with pytest.raises(ConfigError):
        somad.SomadConfig().with_changes(**changes)


def test_nan_from_the_command_line_ends_in_one_line(demo_root, tmp_path, capsys):
    from somad_cli.main import main

    rc = main(["fit", str(demo_root), "--out", str(tmp_path / "m.somad"), "--lambda", "nan"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "statistics.lam" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "m.somad").exists()
