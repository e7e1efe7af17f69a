"""The RELIABILITY table of BENCHMARKS.md: the cases of ``tests/test_reliability.py`` tried and held, by kind,
and the peak memory of scoring huge images.

    python benchmarks/reliability.py [--no-memory]

Each test case (with every generated example of the fuzzed ones) asserts exit status 2 and one line naming the
file, no traceback, nothing else on stderr and every pre-existing file byte-identical, or that the input is read
right. The memory table scores an 8000 x 8000 PNG (about 200 KB) and a deflated float TIFF of the same size with
a small random-init model, each in a fresh process, and reports the peak resident memory.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "test_reliability.py"
SMALL_FIT = "--random-init --backbone resnet18 --image-size 64 --dims 16 --som-size 4 --epochs 1 --device cpu"


def sections() -> dict[str, str]:
    """Test name -> the section heading (``# -- N. title``) it sits under in the suite."""
    found, current = {}, "other"
    for line in SUITE.read_text().splitlines():
        heading = re.match(r"# -- (\d+\. .+?) -{3,}", line)
        if heading:
            current = heading.group(1).strip()
        test = re.match(r"def (test_\w+)", line)
        if test:
            found[test.group(1)] = current
    return found


def run_suite() -> list[tuple[str, str, bool]]:
    """(section, case, held) for every collected case of the suite."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(SUITE),
                f"--junitxml={report}",
            ],
            cwd=ROOT,
            check=False,
        )
        where = sections()
        rows = []
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "")
            held = case.find("failure") is None and case.find("error") is None
            rows.append((where.get(name.split("[")[0], "other"), name, held))
    return rows


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of a command run to completion in a fresh process, in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(command, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) / 1024


def memory_table() -> list[tuple[str, str, float]]:
    import cv2
    import numpy as np
    import PIL.Image

    from somad.demo import make_demo_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_demo_dataset(tmp / "demo", n_train=6, n_test_good=1, n_test_per_defect=1, size=64)
        somad = [sys.executable, "-m", "somad_cli.main"]
        subprocess.run(
            [*somad, "fit", str(data), "--out", str(tmp / "m.somad"), *SMALL_FIT.split()],
            check=True,
            capture_output=True,
        )
        png = tmp / "big.png"
        cv2.imwrite(str(png), np.zeros((8000, 8000, 3), np.uint8))
        tiff = tmp / "big.tif"
        values = np.zeros((8000, 8000), np.float32)
        values[::7] = 0.5
        PIL.Image.fromarray(values, mode="F").save(tiff, compression="tiff_deflate")
        for image in (png, tiff):
            out = tmp / f"out_{image.suffix[1:]}"
            mb = peak_rss_mb([*somad, "score", str(tmp / "m.somad"), str(image), "--out", str(out)])
            rows.append(
                (f"8000 x 8000 {image.suffix[1:].upper()}", f"{image.stat().st_size / 1024:.0f} KB", mb)
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-memory", action="store_true", help="skip the huge-image memory table")
    args = parser.parse_args()
    rows = run_suite()
    by_section: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for section, name, held in rows:
        by_section[section].append((name, held))
    print("| kind of case | cases | held | broke |")
    print("|---|---|---|---|")
    for section, cases in by_section.items():
        broke = [n for n, ok in cases if not ok]
        print(f"| {section} | {len(cases)} | {len(cases) - len(broke)} | {', '.join(broke) or 0} |")
    total = len(rows)
    held = sum(ok for _, _, ok in rows)
    print(f"| all | {total} | {held} | {total - held} |")
    if not args.no_memory:
        print()
        print("| image | file | peak RSS MB (somad score, fresh process) |")
        print("|---|---|---|")
        for image, size, mb in memory_table():
            print(f"| {image} | {size} | {mb:.0f} |")
    return 0 if held == total else 1


if __name__ == "__main__":
    sys.exit(main())
