"""The command line (``somad-gui [DATASET] [--model FILE] [--demo]``) and the README screenshot."""

from __future__ import annotations

import cv2

from somad_gui import __main__ as cli
from somad_gui import app as app_module
from somad_gui import main_window
from somad_gui.screenshot import take_screenshot

from .conftest import small_config


def test_parser():
    args = cli.build_parser().parse_args(["data/bottle", "--model", "m.somad"])
    assert str(args.dataset) == "data/bottle" and str(args.model) == "m.somad" and not args.demo
    assert cli.build_parser().parse_args(["--demo"]).demo


def test_main_opens_dataset_and_model(qtbot, monkeypatch, gui_demo, gui_model_file):
    windows: list[main_window.MainWindow] = []

    class RecordedWindow(main_window.MainWindow):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            windows.append(self)
            qtbot.addWidget(self)

    class FakeApp:
        def exec(self):
            win = windows[-1]
            assert win.isVisible()
            qtbot.waitUntil(lambda: win.session.store.has_results, timeout=120_000)
            win.close()
            return 0

    monkeypatch.setattr(main_window, "MainWindow", RecordedWindow)
    monkeypatch.setattr(app_module, "create_app", lambda *a, **k: FakeApp())
    assert cli.main([str(gui_demo), "--model", str(gui_model_file)]) == 0
    session = windows[0].session
    assert session.dataset.root == gui_demo and session.model_path == gui_model_file


def test_screenshot_shows_a_defective_image(tmp_path, demo_cache, demo_default):
    out = tmp_path / "shot.png"
    assert take_screenshot(out, cache=demo_cache, config=small_config(), size=(1400, 900)) == 0
    image = cv2.imread(str(out))
    assert image.shape[:2] == (900, 1400)
    assert image.std() > 20  # not a blank window
