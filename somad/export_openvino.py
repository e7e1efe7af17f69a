"""OpenVINO IR from the exported ONNX graph (``pip install openvino``): the same contract, inputs and outputs.

The IR is the ONNX graph converted as it is, weights kept in float32 (``compress_to_fp16=False``), with the
ONNX graph's metadata in its ``rt_info`` under ``somad``. OpenVINO's CPU plugin may compute in a lower precision
by default on some processors, which changes the scores (measured in ``BENCHMARKS.md``): :func:`compile_ir`
asks for float32, and so must any deployment (``INFERENCE_PRECISION_HINT: f32``, also written in the metadata).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from somad.errors import ConfigError, DataError

#: The CPU plugin's precision the scores need; written in the IR's metadata for deployments.
PRECISION_HINT = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise ConfigError("--format openvino needs OpenVINO: pip install openvino") from None
    return openvino


def export_openvino(model, path: str | Path, model_digest: str | None = None) -> Path:
    """Write ``model`` as OpenVINO IR: ``path`` (``.xml``) and its weights beside it (``.bin``), each atomically,
    the weights first, so a reader never finds an ``.xml`` without its weights."""
    from somad.export import export_metadata, export_onnx

    openvino = _openvino()
    path = Path(path)
    if path.suffix != ".xml":
        raise DataError(path, "an OpenVINO model is an .xml file (its weights go beside it in a .bin)")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as work:
        onnx_path = Path(work) / "graph.onnx"
        export_onnx(model, onnx_path, model_digest)
        converted = openvino.convert_model(str(onnx_path))
        for key, value in {**export_metadata(model, model_digest), **PRECISION_HINT}.items():
            converted.set_rt_info(value, ["somad", key])
        staged = Path(work) / f"{path.stem}.xml"
        openvino.save_model(converted, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    return path


def ir_runner(path: str | Path):
    """(input element type, input shape, ``run(batch) -> (maps, scores)``) of an IR compiled for the CPU in
    float32; a :class:`DataError` naming the file when it does not load."""
    openvino = _openvino()
    try:
        compiled = openvino.compile_model(str(path), "CPU", PRECISION_HINT)
    except Exception as err:
        raise DataError(path, f"not a loadable OpenVINO model ({type(err).__name__})") from None
    port = compiled.inputs[0]
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    kind = "tensor(uint8)" if port.get_element_type() == openvino.Type.u8 else str(port.get_element_type())

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = compiled(batch)
        return np.asarray(out[compiled.outputs[0]]), np.asarray(out[compiled.outputs[1]])

    return kind, shape, run
