"""Open a cfx report in headless Chromium: every image must load; take a screenshot.

Builds a tiny phantom run (``cfx phantom`` 4 subjects at 24^3, ``cfx sweep`` with the oracle on
seeds 0,1, ``cfx stats --voxelwise``), renders the ``summary`` and ``paper`` reports, then for each:

1. loads a copy of ``index.html`` with a small inline script that, once the page has loaded,
   lists the images whose ``naturalWidth`` is 0 (broken) into the DOM, dumps the DOM with
   ``--dump-dom`` and reads the list back;
2. takes a full-page screenshot of the unmodified ``index.html``.

Chromium runs offline (``file://`` URLs, background networking off). Needs Debian's
``chromium`` (``apt-get install -y chromium``); without it the script says so and exits 2.
Exit status 1 when an image is broken. Run: ``python benchmarks/report_browser_check.py
[--out DIR]``; the screenshots are written to DIR (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--no-first-run", "--hide-scrollbars"]
_PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                     .map(function (i) { return i.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "cfx-image-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken});
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cfx(*args: str) -> None:
    code = "from cfx.counterfactual.cli import app; app()"
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _check(chromium: str, report: Path, shots: Path, profile: Path) -> dict:
    probe = report / "_image_check.html"
    html = (report / "index.html").read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    start = time.perf_counter()
    dumped = _browser(chromium, profile, "--virtual-time-budget=10000", "--dump-dom",
                      probe.as_uri())
    probe.unlink()
    found = re.search(r'<pre id="cfx-image-check">(.*?)</pre>', dumped.stdout, re.S)
    if found is None:
        raise RuntimeError(f"no result from the probe page (chromium exit {dumped.returncode}): "
                           f"{dumped.stderr.strip()[-500:]}")
    result = json.loads(found.group(1).replace("&quot;", '"'))
    shot = shots / f"{report.name}.png"
    _browser(chromium, profile, f"--screenshot={shot}", "--window-size=1280,6000",
             "--virtual-time-budget=10000", (report / "index.html").as_uri())
    result["screenshot"] = str(shot) if shot.is_file() else None
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Folder for the screenshots.")
    args = parser.parse_args()
    chromium = _chromium()
    if chromium is None:
        print("chromium is not installed: apt-get install -y chromium (Debian) and run again",
              file=sys.stderr)
        return 2
    shots = args.out or Path(tempfile.mkdtemp(prefix="cfx-report-check-"))
    shots.mkdir(parents=True, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _cfx("phantom", "--subjects", "4", "--shape", "24,24,24", "--out", str(root / "cohort"),
             "-q")
        _cfx("sweep", "--cohort", str(root / "cohort"), "--attribute", "smoking", "--values",
             "no,yes", "--model", "phantom-oracle", "--seeds", "0,1", "--out",
             str(root / "run"), "-q")
        _cfx("stats", str(root / "run"), "--voxelwise", "--permutations", "100", "-q")
        for template in ("summary", "paper"):
            start = time.perf_counter()
            _cfx("report", str(root / "run"), "--template", template, "-q")
            made = time.perf_counter() - start
            result = _check(chromium, root / "run" / "report" / template, shots,
                            root / "profile")
            failed |= bool(result["broken"]) or result["images"] == 0
            print(f"{template}: cfx report {made:.1f} s; {result['images']} images, "
                  f"{len(result['broken'])} broken {result['broken']}; browser "
                  f"{result['seconds']:.1f} s; screenshot {result['screenshot']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
