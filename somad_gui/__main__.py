"""Command line of the window: ``somad-gui [DATASET] [--model FILE] [--demo] [--screenshot FILE]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="somad-gui",
        description="SOMAD Inspector: browse a dataset, fit a SOMAD model and inspect its anomaly maps.",
    )
    parser.add_argument(
        "dataset", nargs="?", type=Path, help="dataset folder to open (MVTec layout or images)"
    )
    parser.add_argument("--model", type=Path, metavar="FILE", help="a .somad model file to load")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="open the built-in synthetic set; fit a small model in the background on first start (cached)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="FILE",
        help="open the demo, select a defective image, save a PNG of the whole window to FILE and quit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.screenshot is not None:
        from somad_gui.screenshot import take_screenshot

        return take_screenshot(args.screenshot)

    from somad_gui.app import create_app
    from somad_gui.main_window import MainWindow

    app = create_app()
    window = MainWindow()
    window.show()
    if args.demo:
        window.open_demo()
    elif args.dataset is not None:
        window.open_dataset(args.dataset)
    if args.model is not None:
        window.load_model_dialog(args.model)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
