"""Fixtures of the window's tests: offscreen Qt, private settings and cache folders, a tiny demo set and model.

The environment is set before Qt is imported, so no test ever needs a screen or touches the user's settings.
Modal dialogs are replaced for every test: a test that would block on one fails instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
_PRIVATE = Path(tempfile.mkdtemp(prefix="somad-gui-tests-"))
os.environ["XDG_CONFIG_HOME"] = str(_PRIVATE / "config")
os.environ["XDG_CACHE_HOME"] = str(_PRIVATE / "cache")
os.environ["XDG_DATA_HOME"] = str(_PRIVATE / "data")
os.environ.setdefault("XDG_RUNTIME_DIR", str(_PRIVATE / "runtime"))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)

import pytest  # noqa: E402

import somad  # noqa: E402

#: The demo set most window tests share: small, but with good and two defect types, masks included.
GUI_DEMO_ARGS = {"n_train": 12, "n_test_good": 4, "n_test_per_defect": 4, "size": 96, "seed": 1}


def small_config(*, image_size: int = 64, dims: int = 16, som: int = 6, epochs: int = 2) -> somad.SomadConfig:
    """A fast offline configuration: resnet18 with random weights on the CPU."""
    return somad.DEMO_CONFIG.with_changes(
        features={"image_size": image_size, "dims": dims, "batch_size": 8},
        som={"rows": som, "cols": som, "epochs": epochs},
        device="cpu",
    ).validate()


@pytest.fixture(scope="session")
def gui_config() -> somad.SomadConfig:
    return small_config()


@pytest.fixture(scope="session")
def gui_demo(tmp_path_factory) -> Path:
    """A small demo category in the MVTec layout; read-only (copy it with ``demo_copy`` to damage it)."""
    return somad.make_demo_dataset(tmp_path_factory.mktemp("gui-demo"), **GUI_DEMO_ARGS)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A cache folder for the window's demo mode, shared by the tests (the demo set is written once)."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="session")
def demo_default(demo_cache) -> Path:
    """The demo set exactly as ``--demo`` writes it (40 training images of 128 px), inside ``demo_cache``."""
    return somad.make_demo_dataset(demo_cache)


@pytest.fixture
def demo_copy(gui_demo, tmp_path) -> Path:
    import shutil

    target = tmp_path / gui_demo.name
    shutil.copytree(gui_demo, target)
    return target


@pytest.fixture(scope="session")
def gui_model(gui_demo, gui_config):
    """One model fitted on the small demo set; do not mutate it."""
    return somad.fit(somad.open_dataset(gui_demo), gui_config)


@pytest.fixture(scope="session")
def gui_model_file(gui_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gui-model") / "small.somad"
    gui_model.save(path)
    return path


@pytest.fixture(scope="package", autouse=True)
def restore_process_settings():
    """The window tunes process-wide settings (torch threads, GIL switch interval, garbage collector);
    put them back for the tests that run after these."""
    import gc
    import sys

    import torch

    from somad_gui import workers

    omp = os.environ.get("OMP_NUM_THREADS")
    threads = torch.get_num_threads()
    interval = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    yield
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp
    torch.set_num_threads(threads)
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    workers._threads_limited = False


class DialogRecorder:
    """Stands in for ``somad_gui.dialogs``: records errors, answers questions as told, fails on file choosers."""

    def __init__(self):
        self.errors: list[str] = []
        self.overwrite_answer: str | None = None
        self.overwrite_asked: list[list[Path]] = []
        self.keep_answer = "keep"
        self.keep_asked: list[tuple[str, str]] = []
        self.unsaved_answer = "discard"
        self.unsaved_asked: list[str] = []

    def show_error(self, _parent, _title, text):
        self.errors.append(text)

    def ask_overwrite(self, _parent, existing):
        self.overwrite_asked.append(list(existing))
        if self.overwrite_answer is None:
            raise AssertionError(f"unexpected question about existing files: {existing}")
        return self.overwrite_answer

    def ask_keep_model(self, _parent, trained_on, dataset):
        self.keep_asked.append((trained_on, dataset))
        return self.keep_answer

    def ask_unsaved_model(self, _parent, reason):
        self.unsaved_asked.append(reason)
        return self.unsaved_answer

    @staticmethod
    def no_chooser(*args, **kwargs):
        raise AssertionError("a test must pass paths instead of opening a file chooser")


@pytest.fixture(autouse=True)
def dialogs(monkeypatch) -> DialogRecorder:
    from somad_gui import dialogs as module

    recorder = DialogRecorder()
    monkeypatch.setattr(module, "show_error", recorder.show_error)
    monkeypatch.setattr(module, "ask_overwrite", recorder.ask_overwrite)
    monkeypatch.setattr(module, "ask_keep_model", recorder.ask_keep_model)
    monkeypatch.setattr(module, "ask_unsaved_model", recorder.ask_unsaved_model)
    for name in ("get_existing_directory", "get_open_file", "get_save_file"):
        monkeypatch.setattr(module, name, recorder.no_chooser)
    return recorder


@pytest.fixture
def window(qtbot):
    """A main window without saved layout; background work is stopped when the test ends."""
    from somad_gui.main_window import MainWindow

    win = MainWindow(restore_layout=False)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    yield win
    win.session.shutdown()


def wait_idle(qtbot, session, timeout: int = 120_000) -> None:
    """Wait until no background job runs."""
    qtbot.waitUntil(lambda: not session.jobs.is_busy(), timeout=timeout)


@pytest.fixture
def loaded_window(window, qtbot, gui_demo, gui_model, gui_model_file):
    """The window with the small demo set open and scored by the shared model."""
    s = window.session
    with qtbot.waitSignal(s.datasetChanged, timeout=60_000):
        window.open_dataset(gui_demo)
    with qtbot.waitSignal(s.scoringFinished, timeout=120_000):
        s.set_model(gui_model, gui_model_file)
    wait_idle(qtbot, s)
    return window
