"""Writes the format-1 model files the compatibility test loads, and the scores they gave when written.

Run once, by the version that defines the format (``python tests/data/make_format1_models.py``); the files are
committed, and every later version must load them and give the same scores.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import somad  # noqa: E402
from somad.demo import demo_arrays  # noqa: E402

#: The demo images both models are fitted on and score.
DEMO = {"n_train": 8, "n_test_good": 2, "n_test_per_defect": 2, "size": 64, "seed": 5}


def config() -> somad.SomadConfig:
    return somad.SomadConfig().with_changes(
        features={"backbone": "resnet18", "image_size": 32, "dims": 12, "random_init": True},
        som={"rows": 4, "cols": 4, "epochs": 2},
        device="cpu",
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = somad.open_dataset(somad.make_demo_dataset(tmp, **DEMO))
        images = demo_arrays(**DEMO).test
        expected = {}
        for method in ("somad", "padim"):
            model = somad.fit_method(data, method, config())
            path = model.save(HERE / f"format1_{method}.somad")
            results = model.score(images)
            expected[method] = {
                "file": path.name,
                "scores": [float(r.score) for r in results],
                "map_sums": [float(r.anomaly_map.astype("float64").sum()) for r in results],
                "thresholds": model.thresholds,
            }
    (HERE / "format1_expected.json").write_text(json.dumps({"demo": DEMO, "models": expected}, indent=1))


if __name__ == "__main__":
    main()
