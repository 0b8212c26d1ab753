"""cfx report on a real tiny pipeline: phantom -> sweep (oracle, 2 seeds) -> stats -> report."""

import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cfx.counterfactual.cli import app

runner = CliRunner()
HEADLINE = ("mean", "pd15", "laa950")


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _ok(["phantom", "--subjects", "4", "--shape", "24,24,24", "--out", str(root / "cohort"),
         "-q"])
    _ok(["sweep", "--cohort", str(root / "cohort"), "--attribute", "smoking", "--values",
         "no,yes", "--model", "phantom-oracle", "--seeds", "0,1", "--out", str(root / "run"),
         "-q"])
    _ok(["stats", str(root / "run"), "--voxelwise", "--permutations", "50", "-q"])
    return root / "run"


@pytest.fixture(scope="module")
def summary(run):
    _ok(["report", str(run), "--subjects", "2", "-q"])
    return run / "report" / "summary"


class _Links(HTMLParser):
    """Every URL an HTML page loads or links to."""

    def __init__(self):
        super().__init__()
        self.images, self.urls = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        assert tag not in ("script", "link"), f"<{tag}> in a self-contained report"


def _links(folder: Path) -> _Links:
    parser = _Links()
    parser.feed((folder / "index.html").read_text(encoding="utf-8"))
    return parser


def _check_self_contained(folder: Path) -> list[str]:
    links = _links(folder)
    assert links.images
    for url in links.urls:
        parsed = urlparse(url)
        assert not parsed.scheme and not parsed.netloc and not url.startswith("/"), url
        assert (folder / url).is_file(), url
    for src in links.images:
        with Image.open(folder / src) as image:
            image.verify()
    return links.images


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _interval(text: str) -> tuple[float, float]:
    low, high = text.strip("[]").split(",")
    return float(low), float(high)


def _markdown_rows(text: str) -> list[dict]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| contrast | region"))
    header = _cells(lines[start])
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, _cells(line), strict=True)))
    return rows


def _latex_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.removesuffix(r"\\").split("&")]
            for line in text.splitlines() if line.endswith(r"\\") and " vs " in line]


def _same_interval(text: str, low: float, high: float) -> None:
    ends = text.replace("$", "").strip("[]").split(", ")
    _same(ends[0], low)
    _same(ends[1], high)


def _expected(effects: pd.DataFrame, value: str, metric: str) -> pd.Series:
    return effects[(effects.value == value) & (effects.region == "lung")
                   & (effects.metric == metric)].iloc[0]


def _same(text: str, number: float) -> None:
    if pd.isna(number):
        assert text == "—"
    elif text.startswith("<"):
        assert number < float(text.lstrip("< "))
    else:  # the number rounded to the decimals shown (they follow the CI's width)
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert float(text) == pytest.approx(number, abs=0.51 * 10.0 ** -decimals)


def test_summary_is_self_contained_and_every_image_loads(summary):
    images = _check_self_contained(summary)
    panels = [src for src in images if src.endswith("_panel.png")]
    assert panels and all(src.startswith("figures/animations/") for src in panels)
    with Image.open(summary / panels[0]) as panel:  # drawn by the report: an animated PNG
        assert panel.format == "PNG" and panel.is_animated and panel.n_frames == 24
    assert {"figures/paired_values.png", "figures/delta_noise_floor.png",
            "figures/hu_histogram.png", "figures/forest.png",
            "figures/difference_yes-vs-no.png", "figures/meanmap_yes-vs-no.png"} <= set(images)
    for png in (summary / "figures").glob("*.png"):
        assert (png.with_suffix(".pdf")).read_bytes().startswith(b"%PDF")
        with Image.open(png) as image:
            assert image.info["dpi"] == pytest.approx((300, 300), abs=0.1)
    markdown = (summary / "report.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)]+)\)", markdown):
        assert (summary / target).is_file(), target
    assert {p.name for p in (summary / "tables").iterdir()} == {
        "effects.csv", "regions.csv", "headline.csv", "effects.tex"}


def test_the_second_template_links_the_figures_and_tables_the_first_drew(run, summary):
    _ok(["report", str(run), "--template", "paper", "--subjects", "2", "-q"])
    paper = run / "report" / "paper"
    shared = [p.relative_to(paper) for p in paper.rglob("*")
              if p.is_file() and (summary / p.relative_to(paper)).is_file()]
    assert Path("figures/ct_montage.png") in shared and Path("tables/effects.csv") in shared
    for relative in shared:
        same = (paper / relative).read_bytes() == (summary / relative).read_bytes()
        # one file on disk wherever the bytes agree, two where they differ (the pages)
        assert (paper / relative).samefile(summary / relative) == same, relative
    assert not (paper / "index.html").samefile(summary / "index.html")
    before = (paper / "figures" / "ct_montage.png").read_bytes()
    _ok(["report", str(run), "--subjects", "2", "-q"])  # replacing one leaves the other whole
    assert (paper / "figures" / "ct_montage.png").read_bytes() == before
    assert (paper / "figures" / "ct_montage.png").samefile(
        summary / "figures" / "ct_montage.png")


def test_summary_numbers_are_those_of_the_stats_csv(run, summary):
    effects = pd.read_csv(run / "stats" / "effects.csv", dtype={"value": str})
    rows = _markdown_rows((summary / "report.md").read_text(encoding="utf-8"))
    assert [r["metric"] for r in rows] == list(HEADLINE)
    for row in rows:
        want = _expected(effects, "yes", row["metric"])
        assert row["contrast"] == "yes vs no" and row["unit"] == want.unit
        _same(row["Δ"], want.estimate)
        _same_interval(row["CI"], want.ci_low, want.ci_high)
        _same(row["noise floor Δ"], want.noise_estimate)
        _same_interval(row["noise floor CI"], want.noise_ci_low, want.noise_ci_high)
        _same(row["p (Holm)"], want.p_t_holm)
        assert row["subjects × seeds"] == f"{want.n_subjects} × {want.n_seeds}"
    html = (summary / "index.html").read_text(encoding="utf-8")
    mean = _expected(effects, "yes", "mean")
    width = mean.noise_ci_high - mean.noise_ci_low  # 2 significant digits of the CI width
    assert f"{mean.noise_estimate:+.{max(0, 1 - math.floor(math.log10(width)))}f}" in html


@pytest.fixture(scope="module")
def edited(run, tmp_path_factory):
    """A copy of the run whose effects.csv holds made-up numbers, a render of one subject and
    an audit file: the paper report must show exactly these."""
    copy = tmp_path_factory.mktemp("edited") / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    effects = pd.read_csv(copy / "stats" / "effects.csv")
    effects["estimate"] = [12.3456 + i for i in range(len(effects))]
    effects["ci_low"], effects["ci_high"] = effects.estimate - 1.111, effects.estimate + 2.222
    effects["p_t_holm"] = [0.0432, 0.0004] * (len(effects) // 2) + [0.5] * (len(effects) % 2)
    effects["noise_ci_low"] = -3.3333
    effects["body_estimate"], effects["adjusted_estimate"] = 1.2345, 11.1111
    effects["verdict"] = ["leaky", "specific"] * (len(effects) // 2) + ["n/a"] * (len(effects) % 2)
    effects.to_csv(copy / "stats" / "effects.csv", index=False)
    _ok(["render", str(copy), "--subject", "P000", "-q"])
    audit = {"model": {"hash_ok": True, "leak_hu": 0.25}, "checks": [{"name": "null", "p": 0.5}]}
    (copy / "audit").mkdir()
    (copy / "audit" / "audit.json").write_text(json.dumps(audit))
    _ok(["report", str(copy), "--template", "paper", "--subjects", "2", "--out",
         str(copy.parent / "paper"), "-q"])
    return copy


def test_paper_tables_show_the_stats_csv_numbers_in_latex_and_markdown(edited):
    paper = edited.parent / "paper"
    effects = pd.read_csv(edited / "stats" / "effects.csv", dtype={"value": str},
                          keep_default_na=False, na_values=[""])  # the verdict "n/a" stays
    latex = (paper / "tables" / "effects.tex").read_text(encoding="utf-8")
    rows = _latex_rows(latex)
    assert [r[2] for r in rows] == list(HEADLINE)
    for cells in rows:
        want = _expected(effects, "yes", cells[2])
        _same(cells[4], want.estimate)
        _same_interval(cells[5], want.ci_low, want.ci_high)
        _same(cells[6].replace(r"\textless{}", "<"), want.p_t_holm)
        assert cells[7] == want.verdict
        _same(cells[8], want.body_estimate)
        _same(cells[9], want.adjusted_estimate)
        _same_interval(cells[10], want.noise_ci_low, want.noise_ci_high)
    report = (paper / "report.md").read_text(encoding="utf-8")
    for row in _markdown_rows(report):
        want = _expected(effects, "yes", row["metric"])
        _same(row["Δ"], want.estimate)
        assert row["verdict"] == f"**{want.verdict}**"
        _same(row["adjusted Δ"].split()[0], want.adjusted_estimate)
        assert row["Δ"] == f"{want.estimate:+.1f}"  # CI width 3.3: one decimal
    assert latex.strip() in report  # the LaTeX source is also in the Markdown
    html = (paper / "index.html").read_text(encoding="utf-8")
    mean = _expected(effects, "yes", "mean")
    assert f"<td class=\"num\">{mean.estimate:+.1f}</td>" in html  # CI width 3.3: 1 decimal
    assert f"[{mean.ci_low:+.1f}, {mean.ci_high:+.1f}]" in html


def test_paper_numbers_its_figures_and_every_figure_is_a_still_png_and_pdf(edited):
    paper = edited.parent / "paper"
    images = _check_self_contained(paper)
    html = (paper / "index.html").read_text(encoding="utf-8")
    markdown = (paper / "report.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"<b>Figure (\d+)\.</b>", html)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 7
    assert "dashed line: the -950 HU emphysema threshold" in html
    assert "_panel." not in html and "_panel." not in markdown
    assert not (paper / "figures" / "animations").exists()  # nothing drawn or copied for nobody
    assert images[:2] == ["figures/ct_montage.png", "figures/difference_montage.png"]
    for src in images:
        assert src.endswith(".png") and (paper / src).with_suffix(".pdf").is_file()
        with Image.open(paper / src) as png:
            assert png.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    # The oracle adds exactly +20 HU in the lungs: the shared scale is +-20 HU, and the mean-Δ
    # map (not t) is the voxelwise figure.
    assert "One colour scale for every panel, ±20 HU" in html
    assert "figures/meanmap_yes-vs-no.png" in images and "tmap" not in html
    assert "lung window, W 1500 / L -600 HU" in html


PANEL = "sub-P000_attr-smoking_contrast-yes-vs-no_seed-0_axis-axial_panel.png"


def _linked_panels(report: Path) -> list[str]:
    """The panel animations the report's HTML and Markdown show; the same list in both."""
    markdown = (report / "report.md").read_text(encoding="utf-8")
    shown = sorted(src for src in _check_self_contained(report) if "_panel." in src)
    assert shown == sorted(re.findall(r"\((figures/animations/[^)]+_panel\.\w+)\)", markdown))
    return shown


def test_summary_reuses_existing_panels_and_links_no_missing_or_unused_animation(edited,
                                                                                tmp_path):
    """cfx render (default --gifs panels) wrote P000's panels only: the summary report links
    that file, draws P001's the same way, and holds no per-volume or difference animation."""
    _ok(["report", str(edited), "--subjects", "2", "--out", str(tmp_path / "s"), "-q"])
    folder = tmp_path / "s" / "figures" / "animations"
    assert sorted(p.name for p in folder.iterdir()) == [PANEL, PANEL.replace("P000", "P001")]
    assert os.path.samefile(folder / PANEL, edited / "render" / "sub-P000" / PANEL)
    with Image.open(folder / PANEL.replace("P000", "P001")) as drawn:
        assert drawn.format == "PNG" and drawn.n_frames == 24  # one frame per axial slice
    assert _linked_panels(tmp_path / "s") == [f"figures/animations/{p.name}"
                                              for p in sorted(folder.iterdir())]


def test_summary_links_the_gif_that_cfx_render_wrote_last(edited, tmp_path):
    """After cfx render --animation gif, the summary links that GIF (not the older APNG twin,
    never a missing file) and still draws the subjects render skipped as animated PNG; when the
    APNG is the newer file, it is the one linked."""
    copy = tmp_path / "run"
    shutil.copytree(edited, copy, ignore=shutil.ignore_patterns("report"))
    older = copy / "render" / "sub-P000" / PANEL
    os.utime(older, ns=(1, 1))
    _ok(["render", str(copy), "--subject", "P000", "--animation", "gif", "-q"])
    gif = PANEL.replace(".png", ".gif")
    assert older.is_file() and (older.parent / gif).is_file()
    _ok(["report", str(copy), "--subjects", "2", "--out", str(tmp_path / "s"), "-q"])
    folder = tmp_path / "s" / "figures" / "animations"
    assert sorted(p.name for p in folder.iterdir()) == [gif, PANEL.replace("P000", "P001")]
    assert os.path.samefile(folder / gif, older.parent / gif)
    with Image.open(folder / gif) as linked:
        assert linked.format == "GIF" and linked.n_frames == 24
    assert _linked_panels(tmp_path / "s") == [f"figures/animations/{p.name}"
                                              for p in sorted(folder.iterdir())]
    os.utime(older)  # the APNG is now the newer file: the next report links it instead
    _ok(["report", str(copy), "--subjects", "1", "--out", str(tmp_path / "t"), "-q"])
    assert _linked_panels(tmp_path / "t") == [f"figures/animations/{PANEL}"]
    assert os.path.samefile(tmp_path / "t" / "figures" / "animations" / PANEL, older)


def test_paper_methods_paragraph_states_the_run_settings(edited):
    paper = edited.parent / "paper"
    summary = json.loads((edited / "stats" / "summary.json").read_text())
    voxelwise = summary["voxelwise"]["yes-vs-no"]
    flips = ("exhaustive: every distinct flip enumerated" if voxelwise["exhaustive"]
             else "drawn at random, not exhaustive")
    for name in ("index.html", "report.md"):
        text = " ".join((paper / name).read_text(encoding="utf-8").split())
        assert "Methods." in text and "phantom-oracle" in text
        assert "4 subjects × 2 noise seeds" in text
        assert f"({voxelwise['permutations']} sign flips, {flips}" in text
        assert f"below {summary['specificity_ratio'] * 100:.0f} % of the region's Δ" in text
        assert "PD15, the 15th percentile" in text and "%LAA-950" in text
        assert "-950 HU" in text and "Holm-corrected" in text


def test_the_methods_block_can_be_replaced_by_extending_a_builtin(edited, tmp_path):
    mine = tmp_path / "mine.html"
    mine.write_text('{% extends "paper/index.html.j2" %}'
                    "{% block methods %}<p>Our own methods.</p>{% endblock %}")
    _ok(["report", str(edited), "--template", str(mine), "--subjects", "1", "--out",
         str(tmp_path / "out"), "-q"])
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "<p>Our own methods.</p>" in html and "Methods.</b>" not in html
    assert "<b>Figure 1.</b>" in html  # the rest of the paper template is kept


def test_the_audit_file_appears_as_a_key_value_table(edited):
    html = ((edited.parent / "paper") / "index.html").read_text(encoding="utf-8")
    assert "<code>model.leak_hu</code></td><td>0.25</td>" in html
    assert "<code>checks[0].name</code></td><td>null</td>" in html


def test_user_template_file_replaces_a_previous_report(edited, summary, tmp_path):
    card = tmp_path / "checkpoint"
    card.mkdir()
    text = ("# tiny GAN\n\nTrained on **40** phantoms.\n\n| split | n |\n|---|---|\n"
            "| train | 40 |\n\n<script>alert(1)</script>\n\n" + "x" * 3000)
    (card / "README.md").write_text(text)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["settings"]["model"] = str(card)
    (edited / "manifest.json").write_text(json.dumps(manifest))
    mine = tmp_path / "mine.html"
    mine.write_text("<h1>{{ attribute }}</h1>{% for r in headline %}<p>{{ r.metric }} "
                    "{{ r.estimate | signed }}</p>{% endfor %}"
                    "<img src=\"{{ figures.forest.png }}\"><div>{{ model.card_html }}</div>")
    out = tmp_path / "out"
    shutil.copytree(summary, out)
    (out / "stale.txt").write_text("old")
    _ok(["report", str(edited), "--template", str(mine), "--subjects", "1", "--out", str(out),
         "-q"])
    assert not (out / "stale.txt").exists()
    html = (out / "index.html").read_text(encoding="utf-8")
    effects = pd.read_csv(edited / "stats" / "effects.csv", dtype={"value": str})
    assert html.startswith("<h1>smoking</h1>")
    assert f"<p>mean {_expected(effects, 'yes', 'mean').estimate:+.2f}</p>" in html
    card_html = html.split("<div>", 1)[1].rsplit("</div>", 1)[0]
    assert card_html.startswith("<h1>tiny GAN</h1>\n"
                                "<p>Trained on <strong>40</strong> phantoms.</p>")
    assert "<td>train</td>" in card_html and "x" * 3000 in card_html  # whole, not cut
    assert "<script>" not in card_html and "&lt;script&gt;" in card_html  # raw HTML escaped
    assert "…" not in card_html and "**" not in card_html and "# " not in card_html
    _check_self_contained(out)
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# smoking")


def test_unsafe_user_template_is_refused_in_one_line_and_nothing_is_written(run, tmp_path):
    evil = tmp_path / "evil.md"
    evil.write_text("{{ attribute.__class__.__mro__[1].__subclasses__() }}")
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", str(run), "--template", str(evil), "--subjects", "1",
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("cfx: error: template user/evil.md: refused by the sandbox")
    assert result.stderr.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [evil]


def _stats_removed(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "nostats"
    copy.mkdir()
    shutil.copy(run / "manifest.json", copy / "manifest.json")
    return copy


def _damaged(run: Path, tmp_path: Path) -> Path:
    copy = _stats_removed(run, tmp_path)
    shutil.copytree(run / "stats", copy / "stats")
    pd.read_csv(copy / "stats" / "effects.csv").drop(columns="ci_low").to_csv(
        copy / "stats" / "effects.csv", index=False)
    return copy


def _foreign(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("keep me")
    return folder


@pytest.mark.parametrize(("make", "extra", "message"), [
    (_stats_removed, [], r"no statistics \(.*stats/regions.csv is missing\); run cfx stats "
                         ".* first"),
    (_damaged, [], r"effects.csv: missing column\(s\) ci_low; run cfx stats .* again"),
    (None, ["--template", "fancy"], "--template: fancy is neither a built-in template"),
    (None, ["--subjects", "0"], "--subjects: must be >= 1, got 0"),
    ("txt", [], r"--template: .*notes.txt must be a built-in name \(summary, paper\) or a "
                "Jinja2 file named"),
    ("self", [], "--out: .* is the run folder or holds it"),
    ("parent", [], "--out: .* is the run folder or holds it"),
    ("foreign", [], "--out: .* is a non-empty folder that is not a cfx report"),
])
def test_user_errors_are_one_line_and_write_nothing(run, tmp_path, make, extra, message):
    target = run
    if callable(make):
        target = make(run, tmp_path)
    elif make == "txt":
        (tmp_path / "notes.txt").write_text("{{ attribute }}")
        extra = ["--template", str(tmp_path / "notes.txt")]
    elif make in ("self", "parent"):
        extra = ["--out", str(run if make == "self" else run.parent)]
    elif make == "foreign":
        extra = ["--out", str(_foreign(tmp_path))]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    run_before = sorted(p.relative_to(run) for p in run.rglob("*"))
    result = runner.invoke(app, ["report", str(target), *extra])
    assert result.exit_code == 2, result.output
    assert re.match(f"cfx: error: .*{message}", result.stderr)
    assert result.stderr.count("\n") == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == run_before


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a cfx run (no manifest.json)" in result.stderr
