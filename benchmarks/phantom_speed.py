"""Time ``cfx phantom`` and measure the peak memory of one large subject.

Run from the repository root with the project's interpreter::

    python benchmarks/phantom_speed.py

Each case runs in a fresh child process (the same interpreter), which reports its own wall time
and peak resident memory (``resource.getrusage``), so one case's memory never hides another's.
Prints one line per case.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "40 subjects 64x64x64 @ 5 mm": ["--subjects", "40", "--shape", "64,64,64"],
    "1 subject 256x256x128 @ 1.5,1.5,2.5 mm": ["--subjects", "1", "--shape", "256,256,128",
                                               "--spacing", "1.5,1.5,2.5"],
    "imports only (memory floor)": None,
}


def _child(name: str) -> None:
    """Run one case in this process and print its figures as JSON."""
    start = time.perf_counter()
    from cfx.counterfactual.cli import app

    args = CASES[name]
    if args is not None:
        with tempfile.TemporaryDirectory() as tmp:
            app(["phantom", "--out", str(Path(tmp) / "cohort"), "--quiet", *args],
                standalone_mode=False)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib}))


def main() -> None:
    for name in CASES:
        done = subprocess.run([sys.executable, __file__, "--case", name], check=True,
                              capture_output=True, text=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {figures['seconds']:.2f} s (including imports), "
              f"peak memory {figures['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        _child(sys.argv[2])
    else:
        main()
