"""How responsive the window stays while a fit runs in its worker, per method; prints a Markdown table.

A 20 ms timer beats on the GUI thread during each fit on the demo set and the scoring run that follows it (40 images
of 128 px, the demo configuration ``somad.DEMO_CONFIG``); the largest gap between beats is how long the window could not react. Offscreen, with private
settings, so it runs anywhere:

    python benchmarks/bench_gui_responsiveness.py [--methods somad,padim,patchcore,ocsvm,kde]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="somad,padim,patchcore,ocsvm,kde")
    parser.add_argument("--beat-ms", type=int, default=20)
    args = parser.parse_args()
    private = Path(tempfile.mkdtemp(prefix="somad-gui-bench-"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["XDG_CONFIG_HOME"] = str(private / "config")

    from PySide6 import QtCore, QtWidgets

    import somad
    from somad_gui.main_window import MainWindow

    QtWidgets.QApplication([])
    window = MainWindow(restore_layout=False)
    window.resize(1400, 900)
    window.show()
    session = window.session
    loop = QtCore.QEventLoop()
    session.datasetChanged.connect(loop.quit)
    window.open_dataset(somad.make_demo_dataset(private / "demo"))
    loop.exec()
    window.browser.select_entry(0)

    rows = []
    for method in args.methods.split(","):
        gaps: list[float] = []
        last = [time.monotonic()]

        def beat(gaps=gaps, last=last) -> None:
            now = time.monotonic()
            gaps.append(now - last[0])
            last[0] = now

        timer = QtCore.QTimer()
        timer.timeout.connect(beat)
        timer.start(args.beat_ms)
        job = session.fit(somad.DEMO_CONFIG.with_changes(device="cpu"), method=method)
        t0 = last[0] = time.monotonic()
        scored: list[int] = []

        def on_scored(scored=scored) -> None:
            scored.append(1)
            loop.quit()

        session.scoringFinished.connect(on_scored)
        job.finished.connect(loop.quit)
        loop.exec()
        fit_s = time.monotonic() - t0
        if job.outcome == "succeeded" and not scored:
            loop.exec()  # the scoring run that follows a fit, heartbeat still on
        session.scoringFinished.disconnect(on_scored)
        timer.stop()
        gaps_ms = sorted(1000 * g for g in gaps)
        rows.append(
            (
                somad.METHODS[method].label,
                job.outcome,
                fit_s,
                time.monotonic() - t0,
                len(gaps),
                gaps_ms[len(gaps_ms) // 2] if gaps_ms else float("nan"),
                gaps_ms[-1] if gaps_ms else float("nan"),
            )
        )
    session.shutdown()
    print(f"Demo set fit in the window's worker; {args.beat_ms} ms heartbeat on the GUI thread.\n")
    print("| method | outcome | fit s | fit + scoring s | beats | median gap ms | largest gap ms |")
    print("|---|---|---|---|---|---|---|")
    for label, outcome, fit_s, total_s, beats, median, largest in rows:
        print(
            f"| {label} | {outcome} | {fit_s:.1f} | {total_s:.1f} | {beats} | {median:.0f} | {largest:.0f} |"
        )


if __name__ == "__main__":
    main()
