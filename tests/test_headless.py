"""The core and the CLI import and run without any Qt binding (servers and CI machines have no display)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import contextlib, io, sys
import core, core.cli, core.evaluation, core.training, core.render, core.model_file

def qt_modules():
    return sorted(m for m in sys.modules if m.startswith(("PySide6", "pyqtgraph", "PyQt", "shiboken")))

assert not qt_modules(), qt_modules()
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    try:
        core.cli.main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0, exit.code
assert not qt_modules(), qt_modules()
for command in ("fit", "score", "eval", "info"):
    assert command in help_text.getvalue(), command
print("headless ok")
"""


def test_core_and_cli_import_and_run_without_qt():
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
