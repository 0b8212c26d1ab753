"""cfx.analysis.report: filters, generic key/value rows, sandboxed rendering of template folders."""

import math

import pytest

import cfx.analysis.report as report
from cfx.analysis.report import FILTERS, TemplateError, find_templates, key_values, render_report


@pytest.fixture
def templates(tmp_path):
    """A minimal templates root: summary and paper folders and a shared piece."""
    root = tmp_path / "templates"
    files = {
        "_shared/row.j2": "{{ x | signed }}",
        "summary/index.html.j2": "<p>{{ name }} {% include '_shared/row.j2' %}</p>"
                                 "<pre>{{ outputs['tables/t.tex'] }}</pre>",
        "summary/report.md.j2": "# {{ name }} {{ x | num(1) }}\n",
        "summary/tables/t.tex.j2": "{{ name | latex }} & {{ x | signed }}",
        "paper/index.html.j2": "paper {{ name }}",
        "paper/report.md.j2": "paper",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_filters_format_numbers_and_mark_missing_ones():
    assert FILTERS["num"](3.14159) == "3.14" and FILTERS["num"](3.14159, 3) == "3.142"
    assert FILTERS["num"](math.nan) == "—" and FILTERS["num"](None) == "—"
    assert FILTERS["num"](7) == "7.00" and FILTERS["num"]("text") == "text"
    assert FILTERS["signed"](2.5) == "+2.50" and FILTERS["signed"](-0.004) == "-0.0040"
    assert FILTERS["signed"](-0.004, 2) == "0.00"  # rounds to zero: no "-0.00"
    assert FILTERS["ci"](-1.234, 5.0, 2) == "[-1.23, +5.00]" and FILTERS["ci"](1.0, math.nan) == "—"
    assert FILTERS["signed"](math.nan, ci=(1.0, 2.0)) == "—"


@pytest.mark.parametrize(("estimate", "low", "high", "expected"), [
    (20.04, 19.91, 20.17, "+20.04 [+19.91, +20.17]"),  # width 0.26: 2 decimals
    (0.0003, -0.0001, 0.0007, "+0.00030 [-0.00010, +0.00070]"),  # width 8e-4: 5 decimals
    (12.3456, 11.2346, 14.5676, "+12.3 [+11.2, +14.6]"),  # width 3.3: 1 decimal
    (-431.7, -520.2, -350.9, "-432 [-520, -351]"),  # width 169: no decimals
    (20.0, 20.0, 20.0, "+20.00 [+20.00, +20.00]"),  # exact (zero width): 2 decimals
    (20.0000000006, 19.9999999986, 20.0000000027, "+20.00 [+20.00, +20.00]"),  # rounding noise
    (-0.0, -0.0, 0.0, "0.00 [0.00, 0.00]"),  # an exact zero: no "-0.00"
    (-0.00042, -0.00042, -0.00042, "-0.00042 [-0.00042, -0.00042]"),  # exact and tiny
])
def test_estimates_are_rounded_by_their_ci_width(estimate, low, high, expected):
    text = f"{FILTERS['signed'](estimate, ci=(low, high))} {FILTERS['ci'](low, high)}"
    assert text == expected
    assert "-0.00 " not in text and "[-0.00," not in text
    assert FILTERS["pvalue"](0.04567) == "0.046" and FILTERS["pvalue"](2e-9) == "< 0.001"
    assert FILTERS["general"](1234.5678) == "1235" and FILTERS["general"](3) == "3"
    assert FILTERS["latex"]("a_b & 5% {x}") == r"a\_b \& 5\% \{x\}"
    assert FILTERS["md"]("a | b\nc") == r"a \| b c"


def test_key_values_flatten_any_json_shape():
    data = {"checks": [{"name": "hash", "ok": True}], "score": 0.123456789, "empty": {},
            "note": None}
    assert key_values(data) == [("checks[0].name", "hash"), ("checks[0].ok", "True"),
                                ("score", "0.123457"), ("empty", "{}"), ("note", "None")]
    assert key_values([1, 2, 3], limit=2) == [("[0]", "1"), ("[1]", "2"),
                                             ("…", "1 more entries not shown")]
    assert key_values(5) == [("value", "5")]


def test_builtin_template_renders_every_file_html_last_and_escaped(tmp_path, templates):
    written = render_report(tmp_path / "out", {"name": "<b>a_b</b>", "x": 1.25}, "summary",
                            templates)
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == [
        "tables/t.tex", "report.md", "index.html"]
    html = (tmp_path / "out" / "index.html").read_text()
    assert html == ("<p>&lt;b&gt;a_b&lt;/b&gt; +1.25</p>"
                    r"<pre>\textless{}b\textgreater{}a\_b\textless{}/b\textgreater{} &amp; +1.25"
                    "</pre>")
    assert (tmp_path / "out" / "report.md").read_text() == "# <b>a_b</b> 1.2\n"  # no escaping


def test_user_html_file_replaces_index_and_summary_provides_the_rest(tmp_path, templates):
    user = tmp_path / "mine.html"
    user.write_text("mine {{ x | num }} {% include 'user/part.txt' %}")
    (tmp_path / "part.txt").write_text("part")
    render_report(tmp_path / "out", {"name": "n", "x": 2.0}, user, templates,
                  includes=[tmp_path / "part.txt"])
    assert (tmp_path / "out" / "index.html").read_text() == "mine 2.00 part"
    assert (tmp_path / "out" / "report.md").read_text() == "# n 2.0\n"


@pytest.mark.parametrize(("text", "message"), [
    ("{{ name.__class__.__mro__ }}", "template user/bad.md: refused by the sandbox: access to "
                                     "attribute '__class__'"),
    ("{{ x.mro() }}", "refused by the sandbox"),
    ("{{ missing }}", "template user/bad.md: 'missing' is undefined"),
    ("{% for %}", "template user/bad.md, line 1: "),
    ("{% include '../../etc/passwd' %}", "includes ../../etc/passwd, which is neither a "
                                         "template cfx ships"),
    ("{{ 1 // 0 }}", "ZeroDivisionError"),
])
def test_user_template_errors_are_one_line_template_errors(tmp_path, templates, text, message):
    user = tmp_path / "bad.md"
    user.write_text(text)
    with pytest.raises(TemplateError, match=message) as info:
        render_report(tmp_path / "out", {"name": "n", "x": int}, user, templates)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "message"), [
    ("nope", "^template: nope is neither a built-in template"),
    ("notes.txt", r"^template: .*notes.txt must be a built-in name \(summary, paper\) or a "
                  "Jinja2 file"),
])
def test_unknown_templates_are_refused_before_rendering(tmp_path, templates, name, message):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
        name = tmp_path / name
    with pytest.raises(TemplateError, match=message):
        report.check_template(name, templates)
    assert not (tmp_path / "out").exists()


def test_a_template_folder_without_index_is_refused(tmp_path, templates):
    (templates / "paper" / "index.html.j2").unlink()
    with pytest.raises(TemplateError, match=r"template paper: no index.html.j2 in"):
        render_report(tmp_path / "out", {}, "paper", templates)


def test_find_templates_locates_the_shipped_folder():
    root = find_templates()
    assert (root / "summary" / "index.html.j2").is_file()
    assert (root / "paper" / "report.md.j2").is_file()


def test_find_templates_says_clearly_when_the_folder_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "__file__", str(tmp_path / "site-packages" / "cfx" / "analysis" /
                                                 "report.py"))
    with pytest.raises(TemplateError, match="report templates not found: .* lacks summary, "
                                            "paper, _shared; cfx must run from a source checkout"):
        find_templates()


def test_a_user_template_reads_only_shipped_templates_and_named_includes(tmp_path, templates):
    (tmp_path / "secret.txt").write_text("SECRET")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("KEY")
    user = tmp_path / "mine.md"
    for name in ("user/secret.txt", "user/.ssh/id_rsa", "user/../secret.txt"):
        user.write_text(f"{{% include '{name}' %}}")
        with pytest.raises(TemplateError, match=f"includes {name}, which is neither a template "
                                                "cfx ships"):
            render_report(tmp_path / "out", {"name": "n", "x": 1}, user, templates)
    user.write_text("{% include '_shared/row.j2' %} {% include 'user/secret.txt' %}")
    render_report(tmp_path / "out", {"name": "n", "x": 1}, user, templates,
                  includes=[tmp_path / "secret.txt"])
    assert (tmp_path / "out" / "report.md").read_text() == "+1.00 SECRET"


def test_symbolic_links_are_refused_as_template_or_include(tmp_path, templates):
    (tmp_path / "secret.txt").write_text("SECRET")
    (tmp_path / "link.md").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere")
    for link in ("link.md", "dangling.md"):
        with pytest.raises(TemplateError, match=f"^template: .*{link} is a symbolic link"):
            report.check_template(tmp_path / link, templates)
    user = tmp_path / "mine.md"
    user.write_text("{% include 'user/part.txt' %}")
    (tmp_path / "part.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(TemplateError, match=r"^include: .*part.txt is a symbolic link"):
        render_report(tmp_path / "out", {}, user, templates, includes=[tmp_path / "part.txt"])
    assert not (tmp_path / "out").exists()


def test_an_include_swapped_for_a_link_after_the_check_is_not_followed(tmp_path, templates,
                                                                       monkeypatch):
    (tmp_path / "secret.txt").write_text("SECRET")
    part = tmp_path / "part.txt"
    part.write_text("part")
    user = tmp_path / "mine.md"
    user.write_text("{% include 'user/part.txt' %}")
    plan = report._plan

    def swap(*args):
        out = plan(*args)
        part.unlink()
        part.symlink_to(tmp_path / "secret.txt")
        return out

    monkeypatch.setattr(report, "_plan", swap)
    with pytest.raises(TemplateError, match=r"template user/part.txt: cannot read .*part.txt"):
        render_report(tmp_path / "out", {"name": "n", "x": 1}, user, templates,
                      includes=[part])
