"""Peak memory and time of scoring one large image with a saved model; prints a Markdown table.

    python benchmarks/bench_large_image.py MODEL.somad [--sizes 256,1024,2048]

Each size runs in a fresh subprocess, so each peak RSS (resident set size) is that run's own: loading the
model, reading a PNG of that size and scoring it (map at the image's own resolution).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(model_path: str, size: int) -> dict:
    import cv2
    import numpy as np

    import somad

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        image = cv2.resize(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (size, size))
        path = Path(tmp) / "large.png"
        cv2.imwrite(str(path), image)
        model = somad.load_model(model_path, device="cpu")
        t0 = time.perf_counter()
        results, _ = somad.score_paths(model, [path])
        seconds = time.perf_counter() - t0
    assert results[0] is not None and results[0].anomaly_map.shape == (size, size)
    return {
        "size": size,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": Path(model_path).stat().st_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--sizes", default="256,1024,2048")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.model, args.one)))
        return
    print(f"model {args.model}")
    print("| image | seconds (first image, incl. backbone set-up) | peak RSS MB | model file MB |")
    print("|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, args.model, "--one", str(size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(
            f"| {size} x {size} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} | {row['model_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
