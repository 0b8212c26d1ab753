"""Start-up cost of ``cfx --help`` and ``cfx models list`` in CPU seconds, beside a bare
interpreter.

Run from the repository root with the project's interpreter::

    python benchmarks/startup.py [--repeats 5] [--compare SRC] [--json]

Each command runs ``--repeats`` times in a child process (the same interpreter, ``cfx``'s entry
point, output discarded, in an empty temporary folder so ``models list`` finds only the bundled
checkpoints); its cost is the child's user + system CPU time (``resource.getrusage`` of the
children, so other load on the machine does not count as it would in wall time), the best of the
repeats. ``python -c pass`` runs alike in the same run as the baseline, and each command is shown
as a ratio to it. Targets: ``cfx --help`` <= 0.5 s, ``cfx models list`` <= 1 s.
``--compare SRC`` also measures another source tree of cfx (put first on ``PYTHONPATH``, e.g. an
older checkout extracted with ``git archive``) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

_CFX = "import sys; from cfx.counterfactual.cli import app; sys.argv[0] = 'cfx'; app()"
COMMANDS = {"python -c pass": (["-c", "pass"], None),
            "cfx --help": (["-c", _CFX, "--help"], 0.5),
            "cfx models list": (["-c", _CFX, "models", "list"], 1.0)}
"""Label -> (interpreter arguments, target CPU seconds or None for the baseline)."""


def cpu_seconds(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    """User + system CPU seconds of one child ``python ARGS`` (it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeats: int, source: Path | None = None) -> dict[str, float]:
    """Label -> best CPU seconds of ``repeats`` runs, the commands interleaved; ``source``: a cfx
    source tree first on ``PYTHONPATH`` (default: the installed cfx)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source),
                                                          env.get("PYTHONPATH", "")]))
    best = {label: float("inf") for label in COMMANDS}
    with tempfile.TemporaryDirectory() as empty:
        for _ in range(repeats):
            for label, (args, _) in COMMANDS.items():
                best[label] = min(best[label], cpu_seconds(args, Path(empty), env))
    return best


def _print(title: str, best: dict[str, float]) -> None:
    baseline = best["python -c pass"]
    print(f"{title}\n{'command':<18}{'CPU s':>8}{'x pass':>9}{'target':>9}  verdict")
    for label, (_, target) in COMMANDS.items():
        verdict = "" if target is None else ("ok" if best[label] <= target else "OVER")
        shown = "" if target is None else f"{target:.1f}"
        print(f"{label:<18}{best[label]:>8.2f}{best[label] / baseline:>9.1f}{shown:>9}  "
              f"{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each command (best).")
    parser.add_argument("--compare", type=Path, help="Another cfx source tree to measure too.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    options = parser.parse_args()
    results = {"installed": measure(options.repeats)}
    if options.compare is not None:
        results[str(options.compare)] = measure(options.repeats, options.compare)
    if options.json:
        print(json.dumps({"targets": {k: t for k, (_, t) in COMMANDS.items() if t},
                          "cpu_seconds": results}, indent=2))
        return
    for title, best in results.items():
        _print(f"best of {options.repeats}, {title}:", best)


if __name__ == "__main__":
    main()
