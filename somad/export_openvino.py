"""OpenVINO IR from the exported ONNX graph (``pip install openvino``): the same contract, inputs and outputs.

The IR is the ONNX graph converted as it is, weights kept in float32 (``compress_to_fp16=False``), with the
ONNX graph's metadata in its ``rt_info`` under ``somad``. OpenVINO's CPU plugin may compute in a lower precision
by default on some processors, which changes the scores (measured in ``BENCHMARKS.md``):
:func:`somad.export.check_export` compiles it in float32, and so must any deployment
(``INFERENCE_PRECISION_HINT: f32``, also written in the metadata).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from somad.errors import DataError
from somad.export import PRECISION_HINT, export_metadata, export_onnx, openvino_package


def export_openvino(model, path: str | Path, model_digest: str | None = None) -> Path:
    """Write ``model`` as OpenVINO IR: ``path`` (``.xml``) and its weights beside it (``.bin``), each atomically,
    the weights first, so a reader never finds an ``.xml`` without its weights."""
    openvino = openvino_package()
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
