"""Model files written by an earlier version (format 1, in tests/data) load and score as they did then."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import somad
from somad.demo import demo_arrays

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "format1_expected.json").read_text())


@pytest.mark.parametrize("method", sorted(EXPECTED["models"]))
def test_format1_model_loads_and_scores_as_when_written(method):
    expected = EXPECTED["models"][method]
    model = somad.load_any_model(DATA / expected["file"], device="cpu")
    assert model.thresholds == expected["thresholds"]
    results = model.score(demo_arrays(**EXPECTED["demo"]).test)
    np.testing.assert_allclose([r.score for r in results], expected["scores"], rtol=1e-5)
    sums = [float(r.anomaly_map.astype(np.float64).sum()) for r in results]
    np.testing.assert_allclose(sums, expected["map_sums"], rtol=1e-5)
