"""Animation rendering speed and size: cfx's CT and difference animations (frames + write, as
animated PNG and as GIF) vs imageio writing the same frames as GIF.

Target (issue 8): a 128-slice 256x256 GIF renders in <= 1.5x the time imageio needs to write the
same frames already in memory. Issue 19: the animated PNG (``cfx render``'s default) beside the
GIF of the same palette images. Run: ``python benchmarks/render_gif.py``.

Measured (2-core shared CPU, best of 3 wall seconds): CT, imageio 1.34 s, cfx GIF 0.36 s
(ratio 0.27), 4.03 MB, cfx APNG 0.50 s, 3.70 MB; difference map, imageio 1.59 s, cfx GIF 1.91 s
(ratio 1.19), 6.25 MB, cfx APNG 1.69 s, 5.29 MB. At one pixel per voxel, as here, the APNG is
only 1.1-1.2x smaller; the 4x of the demo's panels comes from their upsampled voxels (repeated
rows).
"""

import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from cfx.analysis.render.gif import ct_frames, diff_frames, write_apng, write_gif


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
    diff = volume - volume.mean()
    frames = ct_frames(volume, affine)
    dframes = diff_frames(diff, affine, reference=volume)
    make = {"CT": lambda: ct_frames(volume, affine),
            "diff": lambda: diff_frames(diff, affine, reference=volume)}
    print(f"frames {frames.shape} (slice count, rows, cols, rgb)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for name, shown in (("CT", frames), ("diff", dframes)):
            base = _best(lambda s=shown: iio.imwrite(out / "base.gif", s, duration=125, loop=0))
            gif = _best(lambda n=name: write_gif(out / "a.gif", make[n](), fps=8))
            apng = _best(lambda n=name: write_apng(out / "a.png", make[n](), fps=8))
            size_gif, size_apng = ((out / f).stat().st_size for f in ("a.gif", "a.png"))
            print(f"{name:<5}imageio GIF write only {base:.3f} s | cfx frames+GIF {gif:.3f} s "
                  f"(ratio {gif / base:.2f}, target <= 1.5), {size_gif / 1e6:.2f} MB | "
                  f"cfx frames+APNG {apng:.3f} s, {size_apng / 1e6:.2f} MB "
                  f"({size_gif / size_apng:.1f}x smaller)")


if __name__ == "__main__":
    main()
