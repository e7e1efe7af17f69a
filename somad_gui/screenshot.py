"""Screenshot of the whole window for the README: the demo set, its model, a defective image.

``python -m somad_gui.screenshot docs/screenshot.png`` (or ``somad-gui --screenshot FILE``) opens the demo,
fits the small demo model on first use (cached, like ``--demo``), selects the highest-scoring defective test
image, points the cursor at its hottest pixel so the SOM panes mark its nearest nodes, and saves the window.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore

WINDOW_SIZE = (1280, 800)


def _wait(signal: Any, timeout_s: float) -> bool:
    loop = QtCore.QEventLoop()
    fired: list[bool] = []

    def done(*_args: Any) -> None:
        fired.append(True)
        loop.quit()

    signal.connect(done)
    QtCore.QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(done)
    return bool(fired)


def _settle(ms: int = 300) -> None:
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec()


def prepare_window(window: Any) -> int | None:
    """Select the demo's showcase image and hover its hottest pixel; returns the selected entry."""
    entry = window.default_entry()
    if entry is None:
        return None
    window.browser.select_entry(entry)
    viewer = window.viewer
    if viewer.anomaly_map is not None:
        y, x = np.unravel_index(int(np.argmax(viewer.anomaly_map)), viewer.anomaly_map.shape)
        viewer.single.hovered.emit(float(x) + 0.5, float(y) + 0.5)
    window.som_dock.raise_()
    return entry


def take_screenshot(
    path: str | Path,
    *,
    cache: str | Path | None = None,
    config: Any = None,
    size: tuple[int, int] = WINDOW_SIZE,
    timeout_s: float = 600.0,
) -> int:
    """Write the PNG; returns a process exit status (0 on success)."""
    from somad_gui.app import create_app
    from somad_gui.main_window import MainWindow

    create_app()
    window = MainWindow(restore_layout=False)
    window.resize(*size)
    window.show()
    _settle(50)
    errors: list[str] = []
    window.session.message.connect(lambda level, text: errors.append(text) if level == "error" else None)
    window.open_demo(config, cache)
    if not _wait(window.session.demoReady, timeout_s):
        print(
            f"screenshot: the demo was not ready in time ({'; '.join(errors) or 'timeout'})", file=sys.stderr
        )
        window.close()
        return 1
    prepare_window(window)
    _settle()
    image = window.grab().toImage()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = image.save(str(path))
    window.close()
    if not ok:
        print(f"screenshot: cannot write {path}", file=sys.stderr)
        return 1
    print(f"screenshot: wrote {path} ({image.width()}x{image.height()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m somad_gui.screenshot", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--cache", type=Path, help="demo cache folder (default: the per-user cache)")
    parser.add_argument("--size", default=f"{WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}", help="window size, WxH")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    return take_screenshot(args.output, cache=args.cache, size=(w, h))


if __name__ == "__main__":
    sys.exit(main())
