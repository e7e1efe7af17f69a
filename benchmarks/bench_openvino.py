"""An exported ONNX graph through OpenVINO (``pip install openvino``): parity with the Python path and speed.

    python benchmarks/bench_openvino.py MODEL.somad GRAPH.onnx IMAGE_FOLDER [--precision f32] [--limit 16]

OpenVINO's CPU plugin may run in a lower precision by default on some processors; ``--precision`` sets its
inference precision hint (``f32``, or ``default`` to leave it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import somad
from somad.export import resize_for_export

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import best_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("graph")
    parser.add_argument("images")
    parser.add_argument("--precision", default="f32")
    parser.add_argument("--limit", type=int, default=16)
    args = parser.parse_args()
    import openvino

    model = somad.load_any_model(args.model, device="cpu")
    size = model.config.features.image_size
    images = [
        resize_for_export(somad.read_image(p), size) for p in somad.image_paths([args.images])[: args.limit]
    ]
    hints = {} if args.precision == "default" else {"INFERENCE_PRECISION_HINT": args.precision}
    t0 = time.perf_counter()
    compiled = openvino.compile_model(openvino.convert_model(args.graph), "CPU", hints)
    print(f"converted and compiled in {time.perf_counter() - t0:.1f} s (precision {args.precision})")
    worst_map = worst_score = 0.0
    for image, result in zip(images, model.score(images), strict=True):
        amap, score = (np.asarray(o) for o in compiled(image[None]).values())
        span = float(result.anomaly_map.max() - result.anomaly_map.min())
        worst_map = max(worst_map, float(np.abs(amap[0] - result.anomaly_map).max()) / span)
        worst_score = max(worst_score, abs(float(score[0]) - result.score) / abs(result.score))
    print(f"largest difference: maps {worst_map:.2g} of their range, scores {worst_score:.2g} relative")
    for batch in (1, 8):
        ms = best_ms(lambda chunk: compiled(np.stack(chunk)), images, batch, 3)
        print(f"batch {batch}: {ms:.1f} ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
