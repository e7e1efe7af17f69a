"""How long the window takes to follow a threshold move at scale; prints a Markdown table.

The window (offscreen, private settings, 1280 x 800) holds N scored images (synthetic maps of 256 x 256 px:
a blob over Gaussian-smoothed noise, as the method's maps are smoothed; real PNG files for the image on show) and the threshold moves M times across the score range, as a slider
drag does. Each time is from ``session.set_threshold`` until the events it queued are handled and the whole
window has repainted: every verdict in the browser, the OK/NG counts, the histogram line, the contours of the
image on show and the Regions list. With ``--min-area``, the moves start once the worker has measured each
image's critical level (its time is printed too).

    python benchmarks/bench_threshold.py [--images 1000] [--moves 100] [--min-area 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scored_store(session, n: int, folder: Path, rng: np.random.Generator) -> None:
    """A dataset of ``n`` test images (good and three defect types) with synthetic maps, announced as scored."""
    import cv2

    import somad
    from somad_gui.store import StoredResult

    picture = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    types = ["good", "crack", "hole", "scratch"]
    test = []
    for i in range(n):
        kind = types[i % 4]
        path = folder / "test" / kind / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), picture)
        test.append(somad.Sample(path, "test", kind))
    session.set_dataset(somad.Dataset("bench", folder, [], test, "mvtec"))
    results = {}
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    for e in session.store.entries:
        base = rng.normal(10.0 if e.label == 1 else 6.0, 2.0)
        cy, cx = rng.uniform(40, 216, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(6, 30) ** 2))
        noise = cv2.GaussianBlur(
            rng.random((256, 256), dtype=np.float32), (0, 0), 4.0
        )  # smoothed, as maps are
        amap = (base * (0.5 + 0.5 * blob) + 4.0 * noise).astype(np.float32)
        results[e.index] = StoredResult(amap, (256, 256), float(amap.max()), None, None, float(amap.min()))
    session.store.set_results(results, {})
    session.resultsChanged.emit()
    session.set_threshold(float(np.median(session.store.scores)))
    session.scoringFinished.emit()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--moves", type=int, default=100)
    parser.add_argument("--min-area", type=int, default=0)
    args = parser.parse_args()
    private = Path(tempfile.mkdtemp(prefix="somad-threshold-bench-"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["XDG_CONFIG_HOME"] = str(private / "config")

    from PySide6 import QtWidgets

    from somad_gui.main_window import MainWindow

    app = QtWidgets.QApplication([])
    window = MainWindow(restore_layout=False)
    window.resize(1280, 800)
    window.show()
    app.processEvents()
    rng = np.random.default_rng(0)
    scored_store(window.session, args.images, private / "data", rng)
    t0 = time.perf_counter()
    window.regions.set_rule(None, args.min_area)
    while window.session.jobs.is_busy():  # a minimum area: each image's critical level, in the worker
        app.processEvents()
        time.sleep(0.01)
    measured = time.perf_counter() - t0
    window.browser.select_entry(int(np.argmax(window.session.store.scores)))
    window.regions_dock.raise_()
    app.processEvents()
    window.threshold_dock.raise_()
    scores = window.session.store.scores
    lo, hi = np.percentile(scores, 5), np.percentile(scores, 95)
    times = []
    for value in np.linspace(lo, hi, args.moves):
        t0 = time.perf_counter()
        window.session.set_threshold(float(value))
        app.processEvents()
        window.repaint()
        times.append(1000 * (time.perf_counter() - t0))
    counts = window.session.store.counts()
    assert counts["ok"] + counts["ng"] == args.images
    times = np.array(times)
    print(f"{args.images} scored images, {args.moves} threshold moves, minimum area {args.min_area} px")
    if args.min_area:
        print(f"regions measured in the worker in {measured:.1f} s before the moves")
    print("| images | moves | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    print(
        f"| {args.images} | {args.moves} | {np.percentile(times, 50):.1f} | {np.percentile(times, 95):.1f} "
        f"| {times.max():.1f} |"
    )
    window.session.shutdown()


if __name__ == "__main__":
    main()
