"""The core imports and runs without any Qt binding or front end (servers and CI machines have no display), and
the command line runs on it alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import contextlib, importlib, io, pkgutil, sys
import somad

for info in pkgutil.walk_packages(somad.__path__, "somad."):
    importlib.import_module(info.name)

def loaded(*prefixes):
    return sorted(m for m in sys.modules if m.split(".")[0] in prefixes)

assert not loaded("PySide6", "pyqtgraph", "PyQt5", "PyQt6", "shiboken6"), loaded("PySide6", "pyqtgraph")
assert not loaded("somad_cli", "somad_gui"), loaded("somad_cli", "somad_gui")
import somad_cli.main
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    try:
        somad_cli.main.main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
assert not loaded("PySide6", "pyqtgraph", "shiboken6", "somad_gui")
for command in ("fit", "score", "eval", "info", "bench", "cluster"):
    assert command in help_text.getvalue(), command
print("headless ok")
"""


def test_core_and_cli_import_and_run_without_qt_or_the_window():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("headless ok")
