import pytest
from PIL import Image

from cfx.analysis.figures.output import DPI, new_figure, save_figure


def test_save_figure_writes_png_at_print_dpi_and_a_vector_pdf(tmp_path):
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().plot([0, 1], [1, 0])
    png, pdf = save_figure(fig, tmp_path / "sub" / "line")
    with Image.open(png) as image:
        assert image.size == (2 * DPI, int(1.5 * DPI))
        assert image.info["dpi"] == pytest.approx((DPI, DPI), abs=0.1)
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF")
    assert b"/Subtype /Image" not in content  # a line plot stays vector


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"formats": ("jpg",)}, "formats: expected some of png, pdf, svg, got"),
    ({"formats": ()}, "formats"),
    ({"dpi": 0}, "dpi: must be >= 1, got 0"),
])
def test_save_figure_refuses_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        save_figure(new_figure(1, 1), tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []
