"""ms per image of an exported ONNX graph in onnxruntime against the Python path, same images, one run.

    python benchmarks/bench_export.py MODEL.somad GRAPH.onnx IMAGE_FOLDER [--batches 1,8] [--repeats 3]

Both take images already resized to the model's input size (the graph's contract), so the figures compare
the backbone, the head and the map; each is the best of ``--repeats`` passes over the images.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import somad
from somad.export import onnx_session, resize_for_export
from somad.features import configure_threads


def best_ms(run, images: list[np.ndarray], batch: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for start in range(0, len(images), batch):
            run(images[start : start + batch])
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("graph")
    parser.add_argument("images")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=32)
    args = parser.parse_args()
    configure_threads()
    model = somad.load_any_model(args.model, device="cpu")
    size = model.config.features.image_size
    paths = somad.image_paths([args.images])[: args.limit]
    images = [resize_for_export(somad.read_image(p), size) for p in paths]
    session = onnx_session(args.graph)
    print(f"{model.label}, {len(images)} images at {size} px, best of {args.repeats}")
    print("| batch | Python path ms/image | onnxruntime ms/image |")
    print("|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        python = best_ms(lambda chunk: model.score(chunk), images, batch, args.repeats)
        graph = best_ms(
            lambda chunk: session.run(None, {"image": np.stack(chunk)}), images, batch, args.repeats
        )
        print(f"| {batch} | {python:.1f} | {graph:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
