"""Bytes the README pipeline writes for figures (``render/`` + both report templates) and the
time ``cfx render`` takes, today's tree beside a baseline commit, in the same run.

Run from the repository root with the project's interpreter::

    python benchmarks/output_size.py [--baseline REV] [--permutations N] [--keep DIR]

Each tree (this checkout, and ``REV`` checked out in a temporary ``git worktree``) runs, in a
fresh folder on the demo cohort with the phantom oracle (fast): ``cfx sweep --attribute smoking
--values no,yes --seeds 0,1 --model phantom-oracle``, ``cfx stats --voxelwise``, ``cfx audit``,
``cfx render``, ``cfx report`` (summary) and ``cfx report --template paper``. Bytes are counted
once per file on disk (a hard link is not a second copy), under ``RUN/render`` and
``RUN/report``. Render time is the child's user + system CPU seconds (other load on the machine
does not count as in wall time) and its wall seconds. Target (issue 19): <= 25 MB, render no
slower than the baseline. A second table gives the bytes by kind (each GIF kind, PNG, PDF,
...), and, when a Chromium or Chrome binary is on PATH, each report of this tree is opened
headless and its screenshot saved as ``report-<template>.png`` in ``--screenshots``.

Measured (2-core shared CPU, ``--baseline 028e7b2``, the tree before ``cfx render --gifs``):
render + reports 78.3 -> 31.2 MB (render 76.6 -> 29.4 MB; CT GIFs 33.1 and difference GIFs 13.6
-> 0, panel GIFs 28.0 -> 28.0, PNG 3.07 -> 2.59), render CPU 34.2 -> 14.9 s, wall 66.4 -> 30.1 s.
Still over 25 MB: the 18 panel GIFs alone are 28.0 MB. Their colour count is no lever left:
Pillow's palette mapping already merges the lung window's greys into 23.5 HU bands (the CT GIFs
keep steps <= the frames' noise sd, ~12 HU), and the difference colour map keeps 142 entries
(widest merged band 0.79 HU at +-20 HU; the oracle's difference is exact, noise floor 0 HU);
48 even greys (31 HU steps) cut a panel by only 13 %, 31 difference colours by < 0.1 %.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 25.0
_CFX = "import sys; from cfx.counterfactual.cli import app; sys.argv[0] = 'cfx'; app()"


def _cfx(args: list[str], cwd: Path, source: Path) -> tuple[float, float]:
    """Run ``cfx ARGS`` with ``source`` first on the path; (CPU seconds, wall seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(source), os.environ.get("PYTHONPATH", "")])), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CFX, *args, "--quiet"] if args[0] in
                   ("sweep", "render", "report") else [sys.executable, "-c", _CFX, *args],
                   cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def _kind(path: Path) -> str:
    """``ct gif``, ``diff gif``, ``panel gif``, or the file's suffix."""
    for kind in ("ct", "diff", "panel"):
        if path.name.endswith(f"_{kind}.gif"):
            return f"{kind} gif"
    return path.suffix.lstrip(".") or "other"


def _gif_bytes(sizes: dict[str, int]) -> int:
    """Bytes of every GIF kind in ``sizes`` (from :func:`disk_bytes`)."""
    return sum(n for kind, n in sizes.items() if kind.endswith("gif"))


def disk_bytes(*folders: Path) -> dict[str, int]:
    """Bytes by kind of file under ``folders``, each file on disk counted once (hard links)."""
    seen, sizes = set(), {}
    for folder in folders:
        for path in folder.rglob("*"):
            stat = path.lstat()
            if not path.is_file() or (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            kind = _kind(path)
            sizes[kind] = sizes.get(kind, 0) + stat.st_size
    return sizes


def pipeline(source: Path, work: Path, permutations: int) -> dict:
    """The README pipeline in ``work`` with cfx from ``source``: bytes and render seconds."""
    run = "runs/smoking"
    _cfx(["sweep", "--attribute", "smoking", "--values", "no,yes", "--seeds", "0,1",
          "--model", "phantom-oracle"], work, source)
    _cfx(["stats", run, "--voxelwise", "--permutations", str(permutations)], work, source)
    _cfx(["audit", run], work, source)
    cpu, wall = _cfx(["render", run], work, source)
    _cfx(["report", run], work, source)
    _cfx(["report", run, "--template", "paper"], work, source)
    return {"render_cpu": cpu, "render_wall": wall,
            "render": disk_bytes(work / run / "render"),
            "all": disk_bytes(work / run / "render", work / run / "report")}


def screenshots(reports: Path, folder: Path) -> list[str]:
    """A headless-browser screenshot of each report's ``index.html``; what was saved."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome", "chrome"))), None)
    if browser is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for page in sorted(reports.glob("*/index.html")):
        shot = (folder / f"report-{page.parent.name}.png").resolve()
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", "--window-size=1280,8000",
                        f"--screenshot={shot}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=300)
        saved.append(f"screenshot of {page.parent.name}: {shot}")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="b84bd6f^",
                        help="Commit measured as today's cfx (default: before lean GIFs).")
    parser.add_argument("--permutations", type=int, default=100,
                        help="cfx stats --permutations (the README's 1000 only adds time).")
    parser.add_argument("--keep", type=Path, help="Leave the two runs in this folder.")
    parser.add_argument("--screenshots", type=Path, default=Path("."),
                        help="Folder for the headless-browser screenshots of this tree's reports.")
    options = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="cfx-size-")) if options.keep is None else options.keep
    tree = top / "baseline-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                    options.baseline], check=True, stdout=subprocess.DEVNULL)
    try:
        results = {}
        for label, source in ((f"baseline {options.baseline}", tree), ("this tree", ROOT)):
            (top / label.split()[0]).mkdir(parents=True, exist_ok=True)
            results[label] = pipeline(source, top / label.split()[0], options.permutations)
        shots = screenshots(top / "this" / "runs" / "smoking" / "report", options.screenshots)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=True)
        if options.keep is None:
            shutil.rmtree(top, ignore_errors=True)
    print(f"demo cohort, phantom oracle, seeds 0,1; target <= {TARGET_MB:g} MB")
    print(f"{'tree':<24}{'render MB':>10}{'+reports MB':>12}{'gif MB':>8}{'render CPU s':>13}"
          f"{'wall s':>8}")
    for label, r in results.items():
        total = sum(r["all"].values()) / 1e6
        print(f"{label:<24}{sum(r['render'].values()) / 1e6:>10.1f}{total:>12.1f}"
              f"{_gif_bytes(r['all']) / 1e6:>8.1f}{r['render_cpu']:>13.1f}"
              f"{r['render_wall']:>8.1f}")
    print(f"\nMB by kind (render + reports){'':<8}" + "".join(f"{label:>26}" for label in results))
    for kind in sorted({k for r in results.values() for k in r["all"]}):
        print(f"{kind:<37}" + "".join(f"{r['all'].get(kind, 0) / 1e6:>26.2f}"
                                      for r in results.values()))
    print("\n".join(shots) if shots else "no chromium or chrome on PATH: no screenshot")
    new, old = (sum(r["all"].values()) for r in (results["this tree"],
                                                   results[f"baseline {options.baseline}"]))
    print(f"ratio new / baseline: {new / old:.2f}; {'ok' if new / 1e6 <= TARGET_MB else 'OVER'}"
          f" against {TARGET_MB:g} MB")


if __name__ == "__main__":
    main()
