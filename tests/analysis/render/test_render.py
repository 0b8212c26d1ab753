import struct
import zlib
from fractions import Fraction

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageSequence

from cfx.analysis.render.annotate import colorbar_strip
from cfx.analysis.render.colour import diverging, parse_window, window_gray
from cfx.analysis.render.gif import (
    ct_frames,
    diff_frames,
    grey_levels,
    mosaic,
    panel_frames,
    symmetric_limit,
    write_apng,
    write_gif,
    write_png,
)
from cfx.analysis.render.slices import mid_slice, slice_stack

RAS = np.diag([1.0, 1.0, 1.0, 1.0])


def _marked():
    """A (10, 8, 6) volume with one marker voxel at the patient's right, anterior, superior."""
    volume = np.zeros((10, 8, 6), np.float32)
    volume[9, 7, 5] = 1.0  # max x = right, max y = anterior, max z = superior
    return volume


@pytest.mark.parametrize(("axis", "corner"), [
    ("axial", (0, 0)),      # anterior up, patient's right on image left
    ("coronal", (0, 0)),    # superior up, patient's right on image left
    ("sagittal", (0, 0)),   # superior up, anterior on image left
])
def test_orientation_is_radiological(axis, corner):
    frames = slice_stack(_marked(), RAS, axis)
    hit = np.argwhere(frames == 1.0)
    assert len(hit) == 1
    assert tuple(hit[0][1:]) == corner
    assert hit[0][0] == len(frames) - 1  # the last slice is superior / anterior / right


@pytest.mark.parametrize("flip", [0, 1, 2])
def test_flipped_and_permuted_arrays_display_the_same(flip):
    volume = _marked()
    affine = np.eye(4)
    affine[flip, flip] = -1.0
    affine[flip, 3] = volume.shape[flip] - 1
    flipped = np.flip(volume, axis=flip)
    np.testing.assert_array_equal(slice_stack(flipped, affine, "axial"),
                                  slice_stack(volume, RAS, "axial"))
    permuted = np.transpose(volume, (2, 0, 1))
    perm_affine = np.eye(4)[:, [2, 0, 1, 3]]
    np.testing.assert_array_equal(slice_stack(permuted, perm_affine, "coronal"),
                                  slice_stack(volume, RAS, "coronal"))


def test_display_aspect_follows_spacing():
    frames = slice_stack(np.zeros((10, 8, 6)), np.diag([1.0, 2.0, 3.0, 1.0]), "coronal")
    assert frames.shape == (8, 18, 10)  # rows: 6 slices x 3 mm -> 18 px of 1 mm; cols: 10 x 1 mm


def test_window_maps_level_to_mid_grey_and_clips():
    grey = window_gray(np.array([[-1350.0, -600.0, 150.0, 2000.0]]), "lung")[..., 0]
    assert grey.tolist() == [[0, 128, 255, 255]]
    assert parse_window("400,40") == (400.0, 40.0)
    with pytest.raises(ValueError, match=r"window must be lung, mediastinum or 'W,L'"):
        parse_window("bone")
    with pytest.raises(ValueError, match="window width must be > 0 HU, got -5"):
        parse_window("-5,0")


def test_zero_difference_is_the_colormap_centre():
    centre = np.rint(np.array(matplotlib.colormaps["RdBu_r"](0.5)[:3]) * 255)
    rgb = diverging(np.array([0.0, 30.0, -30.0, 1e6]), limit=30.0)
    np.testing.assert_array_equal(rgb[0], centre)
    np.testing.assert_array_equal(rgb[1], np.rint(np.array(matplotlib.colormaps["RdBu_r"](1.0)[:3])
                                                  * 255))
    np.testing.assert_array_equal(rgb[3], rgb[1])  # saturates
    assert rgb[2][2] > rgb[2][0]  # negative is blue


def test_symmetric_limit_rounds_up():
    assert symmetric_limit(np.full(100, 17.0)) == 20.0
    assert symmetric_limit(np.zeros(5)) == 1.0


def test_gif_has_one_frame_per_slice_the_asked_duration_and_loops(tmp_path):
    volume = np.random.default_rng(0).normal(-700, 100, (12, 10, 7)).astype(np.float32)
    path = write_gif(tmp_path / "ct.gif", ct_frames(volume, RAS), fps=4)
    assert iio.improps(path, index=None).shape[0] == 7
    with Image.open(path) as gif:
        assert gif.n_frames == 7
        assert gif.info["duration"] == 250
        assert gif.info["loop"] == 0


def test_diff_frames_with_bar_overlay_and_contour():
    diff = np.zeros((12, 10, 7), np.float32)
    mask = np.zeros(diff.shape, bool)
    mask[3:9, 2:8, :] = True
    diff[mask] = 20.0
    frames = diff_frames(diff, RAS, limit=40.0, mask=mask)
    assert frames.shape[0] == 7 and frames.shape[2] > 12
    plain = diff_frames(diff, RAS, limit=40.0, colorbar=False)
    assert plain.shape[1:3] == (10, 12)
    outside = plain[0, 0, 0]
    centre = np.rint(np.array(matplotlib.colormaps["RdBu_r"](0.5)[:3]) * 255)
    np.testing.assert_array_equal(outside, centre)
    over = diff_frames(diff, RAS, limit=40.0, reference=np.full(diff.shape, -600.0),
                       colorbar=False)
    np.testing.assert_array_equal(over[0, 0, 0], [128, 128, 128])  # no change: the CT shows


def test_colour_bar_shows_the_frames_colours_from_plus_to_minus_limit():
    strip = colorbar_strip(40.0, 240)
    column = strip[:, 2 + 12 // 2].astype(int)  # through the middle of the bar (64 // 5 wide)
    lut = diverging(np.linspace(40.0, -40.0, 255), 40.0).astype(int)
    # matplotlib turns colours into bytes by truncating, the frames by rounding: 1 of 255 apart
    nearest = np.abs(column[:, None] - lut[None]).max(-1)
    on_bar = np.flatnonzero(nearest.min(1) <= 1)
    rows = np.arange(on_bar[0], on_bar[-1] + 1)
    assert len(on_bar) == len(rows) >= 0.6 * 240  # one unbroken bar of the frames' colours
    order = nearest[rows].argmin(1)
    assert order[0] < 3 and order[-1] > 251  # +40 HU on top, -40 HU at the bottom
    assert (np.diff(order) >= 0).all()  # the colours in the frames' order, top to bottom
    assert abs(order[len(rows) // 2] - 127) <= 2  # 0 HU half-way
    assert (strip[:, 20:] > 200).all(axis=2).any()  # white tick labels right of the bar


def test_panel_frames_are_in_sync_and_titled():
    ct = np.random.default_rng(1).normal(-700, 100, (12, 10, 7)).astype(np.float32)
    frames = panel_frames(ct, ct + 20, np.full(ct.shape, 20.0), RAS,
                          ("Smoker: no", "Smoker: yes", "yes - no"))
    assert frames.shape[0] == 7 and frames.shape[1] > 10
    np.testing.assert_array_equal(frames[:, -10:, :12], ct_frames(ct, RAS))


def test_mosaic_grid():
    tiles = mosaic(np.zeros((12, 10, 9)), RAS, n_slices=6, columns=4)
    assert tiles.shape == (2 * 10, 4 * 12, 3)
    with pytest.raises(ValueError, match="axis must be one of axial, coronal, sagittal"):
        mosaic(np.zeros((4, 4, 4)), RAS, axis="oblique")


def test_png_of_grey_pixels_is_one_channel_and_lossless_and_colour_stays_rgb(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    write_png(tmp_path / "grey.png", np.repeat(grey[..., None], 3, axis=-1))
    with Image.open(tmp_path / "grey.png") as png:
        assert png.mode == "L"
        assert np.array_equal(np.asarray(png), grey)
    colour = np.stack([grey, grey, 255 - grey], axis=-1)
    write_png(tmp_path / "colour.png", colour)
    with Image.open(tmp_path / "colour.png") as png:
        assert png.mode == "RGB"
        assert np.array_equal(np.asarray(png), colour)


def test_shape_mismatch_and_bad_fps(tmp_path):
    with pytest.raises(ValueError, match="volumes must share one grid"):
        diff_frames(np.zeros((4, 4, 4)), RAS, mask=np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="fps must be > 0"):
        write_gif(tmp_path / "x.gif", np.zeros((2, 4, 4, 3), np.uint8), fps=0)


def test_small_volumes_are_upsampled_to_min_size():
    frames = slice_stack(np.zeros((10, 8, 6)), np.diag([2.0, 2.0, 5.0, 1.0]), "axial", min_size=40)
    assert frames.shape == (6, 32, 40)  # 20 x 16 mm field of view at 0.5 mm pixels


def _gif_frames(path) -> tuple[np.ndarray, list]:
    """Every frame of a GIF as RGB, and each frame's palette (None: the global one)."""
    frames, palettes = [], []
    with Image.open(path) as gif:
        for i in range(gif.n_frames):
            gif.seek(i)
            palettes.append(gif.palette.tobytes() if gif.palette is not None else None)
            frames.append(np.asarray(gif.convert("RGB")))
    return np.stack(frames), palettes


def test_ct_gif_keeps_every_grey_exactly_and_starts_at_the_poster_frame(tmp_path):
    volume = np.random.default_rng(2).normal(-600, 300, (16, 12, 9)).astype(np.float32)
    frames = ct_frames(volume, RAS)
    assert len(np.unique(frames)) > 200  # a rich grey ramp, which per-frame quantising bands
    written, _ = _gif_frames(write_gif(tmp_path / "ct.gif", frames, fps=8, first=4, levels=256))
    np.testing.assert_array_equal(written, np.roll(frames, -4, axis=0))


def _noisy_ramp(sigma: float, n: int = 12) -> np.ndarray:
    """Grey frames (n, 64, 64): a smooth ramp 20..235 plus Gaussian noise of ``sigma`` greys."""
    ramp = np.linspace(20, 235, 64)[None, None, :] * np.ones((n, 64, 1))
    noise = np.random.default_rng(5).normal(0, sigma, ramp.shape) if sigma else 0
    return np.clip(np.rint(ramp + noise), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [2.0, 4.0, 8.0])
def test_grey_step_is_at_most_the_frames_own_noise(sigma):
    levels = grey_levels(_noisy_ramp(sigma))
    step = 255 / (levels - 1)
    assert 0.85 * sigma <= step <= 1.05 * sigma  # the noise is estimated to within ~10 %


def test_noise_free_frames_keep_every_grey_and_the_floor_holds():
    assert grey_levels(_noisy_ramp(0.0)) == 256  # a smooth ramp would band: no quantising
    assert grey_levels(_noisy_ramp(60.0)) == 32
    assert grey_levels(_noisy_ramp(4.0)[:1]) == 256  # one frame: no noise estimate


def test_ct_gif_on_fewer_greys_shows_the_nearest_grey_and_is_smaller(tmp_path):
    frames = np.repeat(_noisy_ramp(4.0)[..., None], 3, axis=-1)
    levels = grey_levels(frames[..., 0])
    lean = write_gif(tmp_path / "lean.gif", frames, fps=8, first=3)
    exact = write_gif(tmp_path / "exact.gif", frames, fps=8, first=3, levels=256)
    written, palettes = _gif_frames(lean)
    assert len(set(palettes)) == 1
    greys = np.rint(np.arange(levels) * 255 / (levels - 1))
    shown = np.roll(frames, -3, axis=0).astype(float)
    error = np.abs(written - shown)
    assert np.isin(written, greys).all()  # only the evenly spaced greys
    np.testing.assert_array_equal(error, np.abs(shown[..., None] - greys).min(axis=-1))
    assert error.max() <= 255 / (levels - 1) / 2 + 0.5  # half a step, e.g. 9 HU at 83 greys
    assert lean.stat().st_size < 0.8 * exact.stat().st_size


def test_write_gif_rejects_levels_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="levels must be 2..256 greys, got 1"):
        write_gif(tmp_path / "x.gif", np.zeros((2, 4, 4, 3), np.uint8), levels=1)


def test_colour_gif_has_one_palette_and_no_banding(tmp_path):
    rng = np.random.default_rng(3)
    ct = rng.normal(-700, 80, (40, 40, 10)).astype(np.float32)
    ramp = np.linspace(-30, 30, 40, dtype=np.float32)[:, None, None] * np.ones((1, 40, 10))
    frames = diff_frames(ramp, RAS, limit=30.0, reference=ct)
    written, palettes = _gif_frames(write_gif(tmp_path / "d.gif", frames, fps=8))
    assert len({p for p in palettes}) == 1  # the same palette on every frame: no flicker
    error = np.abs(written.astype(int) - frames.astype(int))
    assert error.max() <= 12 and error.mean() < 1.5  # of 255, on every frame


def test_write_gif_rejects_a_poster_outside_the_frames(tmp_path):
    with pytest.raises(ValueError, match="first must be a frame index in 0..1"):
        write_gif(tmp_path / "x.gif", np.zeros((2, 4, 4, 3), np.uint8), first=2)


def test_mid_slice_is_the_middle_of_the_mask_in_display_order():
    mask = np.zeros((6, 6, 20), bool)
    mask[2:4, 2:4, 4:11] = True  # slices 4..10 along k
    assert mid_slice(mask, RAS, "axial") == 7
    flipped = np.diag([1.0, 1.0, -1.0, 1.0])  # k runs superior -> inferior: frames reverse
    assert mid_slice(mask, flipped, "axial") == 19 - 7
    frames = slice_stack(mask.astype(np.uint8), flipped, "axial")
    assert frames[mid_slice(mask, flipped, "axial")].any()
    assert mid_slice(np.zeros((6, 6, 20), bool), RAS, "axial") == 9


def _chunks(path) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data), read by hand with their CRCs checked."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == \
            zlib.crc32(kind + body)
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def _sequence(path) -> np.ndarray:
    """Every frame of an animation, decoded by Pillow, as RGB (n, rows, cols, 3)."""
    with Image.open(path) as image:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)])


def _colour_frames() -> np.ndarray:
    rng = np.random.default_rng(3)
    ct = rng.normal(-700, 80, (40, 40, 10)).astype(np.float32)
    ramp = np.linspace(-30, 30, 40, dtype=np.float32)[:, None, None] * np.ones((1, 40, 10))
    return diff_frames(ramp, RAS, limit=30.0, reference=ct)


@pytest.mark.parametrize(("make", "levels"), [
    (lambda: np.repeat(_noisy_ramp(4.0)[..., None], 3, axis=-1), None),  # evenly spaced greys
    (lambda: np.repeat(_noisy_ramp(4.0)[..., None], 3, axis=-1), 256),   # every grey exact
    (_colour_frames, None),                                               # one quantised palette
])
def test_apng_shows_exactly_the_gifs_pixels_and_is_smaller(tmp_path, make, levels):
    frames = make()
    apng = write_apng(tmp_path / "a.png", frames, fps=8, first=3, levels=levels)
    gif = write_gif(tmp_path / "a.gif", frames, fps=8, first=3, levels=levels)
    shown = _sequence(apng)
    assert shown.shape == frames.shape
    np.testing.assert_array_equal(shown, _sequence(gif))
    if levels == 256:  # exact greys: the input itself, rolled to the poster frame
        np.testing.assert_array_equal(shown, np.roll(frames, -3, axis=0))
    assert apng.stat().st_size < gif.stat().st_size


def test_apng_frame_count_duration_and_loop_in_its_chunks_and_for_pillow(tmp_path):
    volume = np.random.default_rng(0).normal(-700, 100, (12, 10, 7)).astype(np.float32)
    path = write_apng(tmp_path / "ct.png", ct_frames(volume, RAS), fps=8)
    chunks = _chunks(path)
    (actl,) = [body for kind, body in chunks if kind == b"acTL"]
    assert struct.unpack(">II", actl) == (7, 0)  # 7 frames, 0 plays: loops forever
    delays = [Fraction(*struct.unpack(">HH", body[20:24])) for kind, body in chunks
              if kind == b"fcTL"]
    assert delays == [Fraction(1, 8)] * 7  # seconds, exactly (a GIF stores 120 ms: 10 ms steps)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.is_animated and image.n_frames == 7
        assert image.info["loop"] == 0
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert durations == [125] * 7


def test_apng_poster_frame_is_what_a_viewer_that_does_not_animate_shows(tmp_path):
    volume = np.random.default_rng(2).normal(-600, 300, (16, 12, 9)).astype(np.float32)
    frames = ct_frames(volume, RAS)
    path = write_apng(tmp_path / "ct.png", frames, fps=8, first=4, levels=256)
    chunks = _chunks(path)
    kinds = [kind for kind, _ in chunks]
    assert kinds.index(b"fcTL") < kinds.index(b"IDAT")  # the still image is frame 0, no extra
    still = tmp_path / "still.png"  # the file without its animation chunks: a plain PNG
    plain = [(k, b) for k, b in chunks if k not in (b"acTL", b"fcTL", b"fdAT")]
    still.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b)) for k, b in plain))
    with Image.open(still) as image:
        assert not getattr(image, "is_animated", False)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), frames[4])


@pytest.mark.parametrize("write", [write_apng, write_gif])
@pytest.mark.parametrize(("frames", "options", "message"), [
    (np.zeros((2, 4, 4, 3), np.uint8), {"fps": 0}, "fps must be > 0, got 0"),
    (np.zeros((2, 4, 4, 3), np.uint8), {"levels": 1}, "levels must be 2..256 greys, got 1"),
    (np.zeros((2, 4, 4, 3), np.uint8), {"first": 2}, "first must be a frame index in 0..1"),
    (np.zeros((2, 4, 4, 3), np.float32), {}, "frames must be uint8 .n >= 1, rows, cols, 3."),
    (np.zeros((0, 4, 4, 3), np.uint8), {}, "frames must be uint8"),
])
def test_animation_writers_refuse_bad_arguments_and_write_nothing(tmp_path, write, frames,
                                                                  options, message):
    with pytest.raises(ValueError, match=message):
        write(tmp_path / "x", frames, **options)
    assert not list(tmp_path.iterdir())
