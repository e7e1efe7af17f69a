"""``somad bench``: every method in one run, the JSON and tables, resuming after an interruption."""

from __future__ import annotations

import argparse
import json

import pytest

from somad import bench as runner
from somad.config import SomadConfig
from somad.errors import ConfigError
from somad.features import FeatureExtractor
from somad.methods import METHODS, IsolationForestDetector, PadimDetector
from somad_cli import bench
from tests.conftest import make_config

TINY = [
    "--backbone", "resnet18", "--random-init", "--image-size", "64", "--dims", "16",
    "--som-size", "6", "--epochs", "2", "--device", "cpu",
]  # fmt: skip


def test_bench_runs_every_method_on_the_same_features(demo_root, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = bench.main(
        [str(demo_root), "--methods", "all", *TINY, "--cache", str(tmp_path / "c"), "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["random_init"] is True and report["backbone"] == "resnet18"
    assert list(report["methods"]) == list(METHODS)
    category = demo_root.name
    assert report["categories"][category]["n_test"] == 12
    for name, entry in report["methods"].items():
        r = entry["categories"][category]
        assert set(r) >= {"image_auroc", "pixel_auroc", "pro", "fit_s", "ms_per_image", "model_mb"}
        assert 0.0 <= r["image_auroc"] <= 1.0 and r["fit_s"] >= 0 and r["model_mb"] > 0
        assert r["ms_per_image"] >= r["feature_ms_per_image"] > 0
        assert r["peak_mb"] > 0
        if METHODS[name].gives_maps:
            assert 0.0 <= r["pixel_auroc"] <= 1.0 and 0.0 <= r["pro"] <= 1.0
        else:
            assert r["pixel_auroc"] is None and r["pro"] is None
    printed = capsys.readouterr().out
    assert f"### {category} [RANDOM-INIT backbone]" in printed
    assert "| method [RANDOM-INIT backbone] | image AUROC | pixel AUROC | PRO | fit s | ms/image" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "AUROC" not in line]
    assert len(rows) == len(METHODS)
    assert all(line.count("n/a") == 2 for line in rows[3:]) and all("n/a" not in line for line in rows[:3])
    assert report["command"].startswith("somad bench ")


@pytest.fixture
def fits(monkeypatch):
    """Counts fits per method and backbone passes."""
    calls = {"padim": 0, "iforest": 0, "passes": 0}
    for cls in (PadimDetector, IsolationForestDetector):
        original = cls.fit

        def counting(self, *args, _original=original, **kwargs):
            calls[self.name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", counting)
    build = FeatureExtractor.__init__

    def counting_init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        self.backbone.register_forward_hook(lambda *_: calls.__setitem__("passes", calls["passes"] + 1))

    monkeypatch.setattr(FeatureExtractor, "__init__", counting_init)
    return calls


def test_an_interrupted_bench_resumes_where_it_stopped(demo_root, tmp_path, monkeypatch, fits, capsys):
    args = [str(demo_root), "--methods", "padim,iforest", *TINY, "--cache", str(tmp_path / "c")]
    original = IsolationForestDetector.fit

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(IsolationForestDetector, "fit", interrupted)
    assert bench.main(args) == 130
    stored = json.loads((tmp_path / "c" / runner.RESULTS_NAME).read_text())["results"]
    assert [v["method"] for v in stored.values()] == ["padim"]
    assert fits["padim"] == 1 and fits["passes"] > 0

    monkeypatch.setattr(IsolationForestDetector, "fit", original)
    fits.update(padim=0, iforest=0, passes=0)
    assert bench.main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert fits == {"padim": 0, "iforest": 1, "passes": 0}  # features and padim's result came from disk
    first = json.loads((tmp_path / "a.json").read_text())["methods"]

    fits.update(padim=0, iforest=0, passes=0)
    assert bench.main([*args, "--json", str(tmp_path / "b.json")]) == 0
    assert fits == {"padim": 0, "iforest": 0, "passes": 0}
    assert json.loads((tmp_path / "b.json").read_text())["methods"] == first

    assert bench.main([*args, "--fresh"]) == 0
    assert fits["padim"] == 1 and fits["iforest"] == 1 and fits["passes"] == 0
    capsys.readouterr()


def test_stored_results_are_keyed_by_what_they_depend_on():
    config = make_config()
    keys = ["train-key", "test-key"]
    padim = runner.result_key("padim", {}, config, keys)
    assert padim == runner.result_key("padim", {}, config.with_changes(som={"epochs": 9}), keys)
    assert padim != runner.result_key("padim", {}, config.with_changes(statistics={"lam": 0.1}), keys)
    assert padim != runner.result_key("padim", {}, config, ["other", "test-key"])
    ratio = runner.result_key("patchcore", {"coreset_ratio": 0.1}, config, keys)
    assert ratio != runner.result_key("patchcore", {"coreset_ratio": 0.2}, config, keys)
    assert runner.result_key("somad", {}, config.with_changes(som={"epochs": 9}), keys) != runner.result_key(
        "somad", {}, config, keys
    )


def test_register_adds_the_bench_subcommand_with_method_options():
    parser = argparse.ArgumentParser(prog="somad")
    sub = parser.add_subparsers(dest="command", required=True)
    bench.register(sub)
    args = parser.parse_args(
        ["bench", "data", "--methods", "patchcore,lof", "--coreset-ratio", "0.05", "--option", "lof.n_neighbors=5",
         "--augment", "--random-init", "--backbone", "resnet18"]
    )  # fmt: skip
    assert args.handler is bench.cmd_bench and args.data == "data"
    methods = bench.parse_methods(args.methods)
    options = bench.options_from_args(args, methods)
    assert options == {"patchcore": {"coreset_ratio": 0.05}, "lof": {"augment": True, "n_neighbors": "5"}}
    assert bench.parse_methods("all") == list(METHODS)
    with pytest.raises(ConfigError, match="spade"):
        bench.parse_methods("somad,spade")
    args.option = ["lof.bogus=1"]
    with pytest.raises(ConfigError, match="bogus"):
        bench.options_from_args(args, methods)


def test_bench_reports_bad_input_in_one_line(demo_root, tmp_path, capsys):
    assert bench.main([str(demo_root), "--methods", "padim,spade", *TINY, "--no-cache"]) == 2
    assert "spade" in capsys.readouterr().err
    good_only = tmp_path / "plain"
    good_only.mkdir()
    (good_only / "a.png").write_bytes((demo_root / "train" / "good" / "000.png").read_bytes())
    assert bench.main([str(good_only), "--methods", "padim", *TINY, "--no-cache"]) == 2
    assert "no category" in capsys.readouterr().err
    import argparse

    defaults = bench.add_arguments(argparse.ArgumentParser()).parse_args(["data"])
    assert defaults.backbone == SomadConfig().features.backbone  # bench defaults are fit's


def test_bench_on_a_category_reached_through_another_path(demo_copy, tmp_path):
    """Features cached from one route to the images serve another route to the same files (a link)."""
    cache = str(tmp_path / "c")
    assert bench.main([str(demo_copy), "--methods", "padim", *TINY, "--cache", cache]) == 0
    linked_root = tmp_path / "linked"
    linked_root.mkdir()
    (linked_root / demo_copy.name).symlink_to(demo_copy, target_is_directory=True)
    out = tmp_path / "linked.json"
    code = bench.main(
        [str(linked_root / demo_copy.name), "--methods", "padim", *TINY, "--cache", cache, "--json", str(out)]
    )
    assert code == 0
    assert json.loads(out.read_text())["categories"][demo_copy.name]["n_test"] == 12
