"""ONNX export: one graph with the Python path's scores, its contract, and ``somad export`` / ``check-export``."""

from __future__ import annotations

import pytest
import torch

import somad
from somad import ConfigError, DataError
from somad.export import TOLERANCE, check_export, export_onnx, onnx_session, resize_for_export
from somad.methods import create_detector
from somad.model import FittedModel
from somad_cli.main import main
from tests.conftest import FAST_FIT

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is installed by the test extra")


@pytest.fixture(scope="module")
def models(demo_root, fast_config):
    dataset = somad.open_dataset(demo_root)
    return {m: somad.fit(dataset, fast_config, method=m) for m in ("somad", "padim", "patchcore")}


@pytest.fixture(scope="module")
def images(demo_root):
    return [somad.read_image(s.path) for s in somad.open_dataset(demo_root).test]


@pytest.mark.parametrize("method", ["somad", "padim", "patchcore"])
def test_the_graph_scores_as_the_python_path(models, images, tmp_path, method):
    model = models[method]
    path = export_onnx(model, tmp_path / f"{method}.onnx")
    result = check_export(model, path, images)
    assert result.n_images == len(images)
    assert result.max_rel_map <= TOLERANCE and result.max_rel_score <= TOLERANCE, result
    assert result.threshold is not None and result.verdicts_agree
    size = model.config.features.image_size
    resized = resize_for_export(images[0], size)
    maps, scores = onnx_session(path).run(None, {"image": resized[None].repeat(3, axis=0)})  # a batch of 3
    assert maps.shape == (3, size, size) and scores.shape == (3,)
    assert scores[0] == pytest.approx(model.score([resized])[0].score, rel=TOLERANCE)


def test_the_graph_states_its_contract_and_export_is_deterministic(models, tmp_path):
    import onnx

    first = export_onnx(models["somad"], tmp_path / "a.onnx", model_digest="abc")
    second = export_onnx(models["somad"], tmp_path / "b.onnx", model_digest="abc")
    assert first.read_bytes() == second.read_bytes()
    props = {p.key: p.value for p in onnx.load(str(first)).metadata_props}
    assert props["method"] == "somad" and props["model_sha256"] == "abc"
    assert props["image_size"] == str(models["somad"].config.features.image_size)
    assert float(props["threshold"]) == pytest.approx(somad.threshold_to_use(models["somad"].thresholds))
    graph_input = onnx_session(first).get_inputs()[0]
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [64, 64, 3]


def test_a_graph_of_another_input_size_is_refused_by_the_check(models, images, tmp_path):
    path = export_onnx(models["padim"], tmp_path / "padim.onnx")
    bigger = FittedModel(
        "padim",
        models["padim"].config.with_changes(features={"image_size": 96}),
        models["padim"].detector,
        models["padim"].weights_origin,
        models["padim"].channel_indices,
    )
    with pytest.raises(DataError, match=r"padim\.onnx: its input is tensor\(uint8\)"):
        check_export(bigger, path, images[:1])
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(DataError, match=r"junk\.onnx: not a loadable ONNX graph"):
        check_export(models["padim"], tmp_path / "junk.onnx", images[:1])


def test_image_level_methods_are_refused_in_one_line(fast_config, tmp_path):
    detector = create_detector("lof", fast_config, {}, torch.device("cpu"))
    model = FittedModel("lof", fast_config, detector, "random-init", torch.arange(16).numpy())
    with pytest.raises(ConfigError, match="image scores only"):
        export_onnx(model, tmp_path / "lof.onnx")
    assert not (tmp_path / "lof.onnx").exists()


def test_export_and_check_export_from_the_command_line(demo_root, tmp_path, capsys):
    model = tmp_path / "m.somad"
    assert main(["fit", str(demo_root), "--out", str(model), *FAST_FIT]) == 0
    graph = tmp_path / "m.onnx"
    assert main(["export", str(model), "--out", str(graph)]) == 0
    assert main(["export", str(model), "--out", str(graph)]) == 2  # exists: --overwrite to replace it
    assert "--overwrite" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["check-export", str(model), str(graph), str(demo_root / "test")]) == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "verdicts at the model's threshold: all agree" in out


def test_openvino_ir_from_the_same_graph_scores_as_the_python_path(demo_root, tmp_path, capsys):
    pytest.importorskip("openvino", reason="OpenVINO is installed by the test extra")
    model = tmp_path / "m.somad"
    assert main(["fit", str(demo_root), "--out", str(model), *FAST_FIT]) == 0
    ir = tmp_path / "m.xml"
    assert main(["export", str(model), "--format", "openvino", "--out", str(ir)]) == 0
    assert ir.is_file() and ir.with_suffix(".bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.somad", "m.xml"]  # nothing left over
    capsys.readouterr()
    assert main(["check-export", str(model), str(ir), str(demo_root / "test")]) == 0
    out = capsys.readouterr().out
    assert "agreement" in out and "all agree" in out
    import openvino

    read = openvino.Core().read_model(str(ir))
    assert read.get_rt_info(["somad", "method"]).astype(str) == "somad"
    assert read.get_rt_info(["somad", "INFERENCE_PRECISION_HINT"]).astype(str) == "f32"
    assert main(["export", str(model), "--format", "openvino", "--out", str(tmp_path / "m2.onnx")]) == 2
    assert ".xml" in capsys.readouterr().err
