"""Bytes the README pipeline writes for figures (``render/`` + both report templates) and the
time ``cfx render`` takes, today's tree beside a baseline commit, in the same run.

Run from the repository root with the project's interpreter::

    python benchmarks/output_size.py [--baseline REV] [--permutations N] [--keep DIR]

Each tree (this checkout, and ``REV`` checked out in a temporary ``git worktree``) runs, in a
fresh folder on the demo cohort with the phantom oracle (fast): ``cfx sweep --attribute smoking
--values no,yes --seeds 0,1 --model phantom-oracle``, ``cfx stats --voxelwise``, ``cfx audit``,
``cfx render``, ``cfx report`` (summary) and ``cfx report --template paper``, each importing cfx
from its own tree (through a folder of ``cfx/<layer>`` links first on the path, checked before
use: the editable install alone would import this checkout for both). Bytes are counted once per
file on disk (a hard link is not a second copy), under ``RUN/render`` and ``RUN/report``. Render
time is the child's user + system CPU seconds (other load on the machine does not count as in
wall time) and its wall seconds. Target (issue 19): <= 25 MB, render no slower than the
baseline. A second table gives the bytes by kind: each animation by role and format (``panel
apng``, ``panel gif``, ``ct apng``, ...; a PNG is an APNG when an ``acTL`` chunk precedes its
image data), ``png still``, PDF, ...; when a Chromium or Chrome binary is on PATH, each report of
this tree is opened headless and its screenshot saved as ``report-<template>.png`` in
``--screenshots``.

Measured (2-core CPU shared with two training runs, ``--baseline f10935d``, the GIF panels):
render + reports 31.2 -> 10.2 MB (render 29.4 -> 8.4 MB; the 18 panels 28.0 MB of GIF -> 7.0 MB
of animated PNG, the same frames and pixels; stills 2.59 and PDF 0.47 MB unchanged). Render CPU
13.1 -> 15.3 s in that run, but load from the training runs moves it by +-1.5 s: ``cfx render``
of one run repeated 4 times per tree, alternating, gave 14.05-15.37 s (baseline) and
13.90-14.98 s (this tree). Before (``--baseline 028e7b2``, the tree before ``cfx render --gifs``):
78.3 -> 31.2 MB, render CPU 34.2 -> 14.9 s.
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
LAYERS = ("analysis", "counterfactual", "models", "reports")
_CFX = "import sys; from cfx.counterfactual.cli import app; sys.argv[0] = 'cfx'; app()"


def _shim(source: Path, folder: Path) -> Path:
    """A folder holding ``cfx/<layer>`` links to ``source``'s layer folders, as ``setup.py``
    maps them: first on the path, it makes ``import cfx.analysis`` (and the others) read
    ``source``. ``source`` itself on the path would not: it holds no ``cfx/`` folder, and the
    editable install would then import this checkout's layers for both trees."""
    (folder / "cfx").mkdir(parents=True, exist_ok=True)
    for layer in LAYERS:
        (folder / "cfx" / layer).symlink_to(source / layer, target_is_directory=True)
    probe = subprocess.run([sys.executable, "-c", "import cfx.counterfactual as c; "
                            "print(c.__file__)"], env=dict(os.environ, PYTHONPATH=str(folder)),
                           check=True, capture_output=True, text=True).stdout.strip()
    if not Path(probe).resolve().is_relative_to(source.resolve()):
        raise RuntimeError(f"cfx imports from {probe}, not from {source}")
    return folder


def _cfx(args: list[str], cwd: Path, path: Path) -> tuple[float, float]:
    """Run ``cfx ARGS`` with ``path`` (a :func:`_shim`) first on the path; (CPU seconds, wall
    seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(path), os.environ.get("PYTHONPATH", "")])), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CFX, *args, "--quiet"] if args[0] in
                   ("sweep", "render", "report") else [sys.executable, "-c", _CFX, *args],
                   cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def _is_apng(path: Path) -> bool:
    """Whether a PNG file is animated: an ``acTL`` chunk comes before its first ``IDAT``."""
    with path.open("rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        while len(head := fh.read(8)) == 8:
            if head[4:] in (b"acTL", b"IDAT"):
                return head[4:] == b"acTL"
            fh.seek(int.from_bytes(head[:4], "big") + 4, os.SEEK_CUR)  # data and CRC
    return False


def _kind(path: Path) -> str:
    """``<role> apng`` or ``<role> gif`` for an animation (role ``ct``, ``diff`` or ``panel``
    from its name), ``png still`` for a PNG that does not animate, else the file's suffix."""
    suffix = path.suffix.lstrip(".")
    if suffix == "gif" or (suffix == "png" and _is_apng(path)):
        role = next((r for r in ("ct", "diff", "panel") if path.stem.endswith(f"_{r}")), "other")
        return f"{role} {'gif' if suffix == 'gif' else 'apng'}"
    return "png still" if suffix == "png" else suffix or "other"


def _animation_bytes(sizes: dict[str, int]) -> int:
    """Bytes of every animation kind (APNG and GIF) in ``sizes`` (from :func:`disk_bytes`)."""
    return sum(n for kind, n in sizes.items() if kind.endswith(("gif", "apng")))


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
    run, source = "runs/smoking", _shim(source, work / ".cfx-path")
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
    parser.add_argument("--baseline", default="f10935d",
                        help="Commit compared with this tree (default: GIF panels, before "
                             "animated PNG).")
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
    print(f"{'tree':<24}{'render MB':>10}{'+reports MB':>12}{'anim MB':>8}{'render CPU s':>13}"
          f"{'wall s':>8}")
    for label, r in results.items():
        total = sum(r["all"].values()) / 1e6
        print(f"{label:<24}{sum(r['render'].values()) / 1e6:>10.1f}{total:>12.1f}"
              f"{_animation_bytes(r['all']) / 1e6:>8.1f}{r['render_cpu']:>13.1f}"
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
