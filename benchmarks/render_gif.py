"""GIF rendering speed: cfx's CT GIF (frames + write) vs imageio writing the same frames.

Target (issue 8): a 128-slice 256x256 GIF renders in <= 1.5x the time imageio needs to write the
same frames already in memory. Run: ``python benchmarks/render_gif.py``.
"""

import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from cfx.analysis.render.gif import ct_frames, diff_frames, write_gif


def _volume(shape=(256, 256, 128)) -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3)
    return (-850 + 400 * smooth / smooth.std() + rng.normal(0, 20, shape)).astype(np.float32)


def _best(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    volume, affine = _volume(), np.diag([0.7, 0.7, 2.5, 1.0])
    frames = ct_frames(volume, affine)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        baseline = _best(lambda: iio.imwrite(out / "base.gif", frames, duration=125, loop=0))
        ours = _best(lambda: write_gif(out / "ct.gif", ct_frames(volume, affine), fps=8))
        diff = volume - volume.mean()
        dframes = diff_frames(diff, affine, reference=volume)
        base_diff = _best(lambda: iio.imwrite(out / "bd.gif", dframes, duration=125, loop=0))
        ours_diff = _best(lambda: write_gif(out / "d.gif",
                                            diff_frames(diff, affine, reference=volume), fps=8))
    print(f"frames {frames.shape} (slice count, rows, cols, rgb)")
    print(f"CT GIF   imageio write only {baseline:.3f} s | cfx frames+write {ours:.3f} s | "
          f"ratio {ours / baseline:.2f} (target <= 1.5)")
    print(f"diff GIF imageio write only {base_diff:.3f} s | cfx frames+write {ours_diff:.3f} s | "
          f"ratio {ours_diff / base_diff:.2f}")


if __name__ == "__main__":
    main()
