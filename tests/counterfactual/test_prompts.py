import hashlib

import numpy as np
import pytest
from typer.testing import CliRunner

from cfx.counterfactual.cli import app
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.prompts import (
    DEFAULT_TEMPLATE,
    DEFAULT_TEMPLATE_TEXT,
    PromptTemplate,
    load_template,
)
from cfx.counterfactual.volume import write_volume

runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # no wrapping inside the rich table


def test_default_template_example():
    record = {"age": 68, "sex": "male", "smoking": "yes", "mortality": "alive",
              "diagnosis": "IPF"}
    assert DEFAULT_TEMPLATE.render(record) == (
        "Lung CT scan: Patient age: 68. Gender: Male. Smoker: yes. One-year status: alive. "
        "Diagnosis: IPF.")
    full = {**record, "pack_years": 42.5, "ctd_type": "rheumatoid arthritis"}
    assert DEFAULT_TEMPLATE.render(full) == (
        "Lung CT scan: Patient age: 68. Gender: Male. Smoker: yes. Pack-years: 42.5. One-year "
        "status: alive. Diagnosis: IPF. CTD type: rheumatoid arthritis.")


@pytest.mark.parametrize("missing", [{}, {"age": None, "sex": None},
                                     {"age": float("nan"), "sex": float("nan")}])
def test_missing_values_are_left_out_entirely(missing):
    prompt = DEFAULT_TEMPLATE.render({**missing, "smoking": "no", "diagnosis": "UILD"})
    assert prompt == "Lung CT scan: Smoker: no. Diagnosis: UILD."
    assert "nan" not in prompt.lower() and "None" not in prompt and "age" not in prompt


def test_phrases_write_each_present_field_alone():
    record = {"age": 68, "sex": None, "smoking": "yes", "site": "B", "diagnosis": float("nan")}
    assert DEFAULT_TEMPLATE.phrases(record) == {
        "age": "Lung CT scan: Patient age: 68.", "smoking": "Lung CT scan: Smoker: yes."}
    # a field's phrase does not depend on the other fields
    assert DEFAULT_TEMPLATE.phrases({"smoking": "yes"}) == {
        "smoking": "Lung CT scan: Smoker: yes."}


def test_phrases_of_a_template_without_fixed_text(tmp_path):
    path = tmp_path / "t.j2"
    path.write_text("{% if smoking is defined %}Smoker: {{ smoking }}.{% endif %}",
                    encoding="utf-8")
    template = load_template(path)
    assert template.phrases({"smoking": "no", "age": 50}) == {"smoking": "Smoker: no."}
    assert template.phrases({"age": 50}) == {}


def test_name_text_and_hash_are_exposed():
    assert DEFAULT_TEMPLATE.name == "default" and DEFAULT_TEMPLATE.text == DEFAULT_TEMPLATE_TEXT
    assert DEFAULT_TEMPLATE.sha256 == hashlib.sha256(DEFAULT_TEMPLATE_TEXT.encode()).hexdigest()


def test_user_template_file(tmp_path):
    path = tmp_path / "t.j2"
    path.write_text("Chest CT.\n{% if smoking is defined %}  Smoking history: {{ smoking }}."
                    "{% endif %}\n{% if 'CTD type' in record %}CTD: {{ record['CTD type'] }}."
                    "{% endif %}\n", encoding="utf-8")
    template = load_template(path)
    assert template.name == str(path)
    assert template.render({"smoking": "yes", "CTD type": "SSc"}) == (
        "Chest CT. Smoking history: yes. CTD: SSc.")
    assert template.render({}) == "Chest CT."


def test_undefined_variable_names_the_file(tmp_path):
    path = tmp_path / "t.j2"
    path.write_text("Age {{ age }}.")
    with pytest.raises(UserInputError, match=r"t\.j2: 'age' is undefined for subject A1; guard "
                                             r"optional columns with \{% if name is defined %\}"):
        load_template(path).render({"sex": "male"}, "subject A1")


@pytest.mark.parametrize("unsafe", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ smoking.__class__.__init__.__globals__ }}",
    "{% set f = record.update %}{{ f({'x': 1}) }}",
])
def test_sandbox_refuses_unsafe_code(tmp_path, unsafe):
    path = tmp_path / "evil.j2"
    path.write_text(unsafe)
    with pytest.raises(UserInputError, match=r"^\S*evil\.j2: the template sandbox refused: "):
        load_template(path).render({"smoking": "yes"})


def test_syntax_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.j2"
    path.write_text("Lung CT.\n{% if age is defined %}Age {{ age }}.\n")
    with pytest.raises(UserInputError, match=r"broken\.j2: template syntax error on line \d: "
                                             r"Unexpected end of template"):
        load_template(path)


def test_other_template_failures(tmp_path):
    with pytest.raises(UserInputError, match=r"^x\.j2: template failed for subject B: "
                                             r"ZeroDivisionError"):
        PromptTemplate("{{ age / 0 }}", "x.j2").render({"age": 3}, "subject B")
    with pytest.raises(UserInputError, match=r"^x\.j2: the template gives an empty prompt for "
                                             r"record$"):
        PromptTemplate("{% if age is defined %}{{ age }}{% endif %}\n  ", "x.j2").render({})
    with pytest.raises(UserInputError, match=r"none\.j2: prompt template file not found"):
        load_template(tmp_path / "none.j2")
    (tmp_path / "latin1.j2").write_bytes("Sjögren".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"latin1\.j2: cannot read the prompt template"):
        load_template(tmp_path / "latin1.j2")


# --- cfx prompts -----------------------------------------------------------------------------

@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "cohort"
    for sid in ("A1", "B2", "C3"):
        write_volume(root / "masks" / f"{sid}.nii.gz", np.ones((4, 4, 4), np.int16), np.eye(4))
    (root / "clinical.csv").write_text(
        "subject,age,sex,smoking,mortality,diagnosis,site\n"
        "A1,68,M,current,0,IPF,north\n"
        "B2,,female,never,,,south\n"
        "C3,50.5,F,,dead,ctd ild,\n")
    return root


def _rows(stdout):
    """Table rows as lists of stripped cells."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines()
            if line.startswith("│")]


def test_prompts_table(cohort):
    result = runner.invoke(app, ["prompts", "--cohort", str(cohort)], env=WIDE)
    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout) == [
        ["A1", "Lung CT scan: Patient age: 68. Gender: Male. Smoker: yes. One-year status: "
               "alive. Diagnosis: IPF."],
        ["B2", "Lung CT scan: Gender: Female. Smoker: no."],
        ["C3", "Lung CT scan: Patient age: 50.5. Gender: Female. One-year status: dead. "
               "Diagnosis: CTD-ILD."],
    ]
    assert "cohort: 3 subjects; template default (sha256 " in result.stdout
    assert "nan" not in result.stdout and "None" not in result.stdout


def test_prompts_table_with_one_attribute_edited(cohort):
    result = runner.invoke(app, ["prompts", "--cohort", str(cohort), "--attribute", "smoking",
                                 "--values", "Never,yes"], env=WIDE)
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)
    assert [r[:2] for r in rows] == [[s, v] for s in ("A1", "B2", "C3") for v in ("no", "yes")]
    assert rows[0][2] == ("Lung CT scan: Patient age: 68. Gender: Male. Smoker: no. One-year "
                          "status: alive. Diagnosis: IPF.")
    assert rows[1][2] == rows[0][2].replace("Smoker: no.", "Smoker: yes.")
    assert rows[4][2] == ("Lung CT scan: Patient age: 50.5. Gender: Female. Smoker: no. "
                          "One-year status: dead. Diagnosis: CTD-ILD.")
    assert "3 subjects × 2 values of smoking" in result.stdout


def test_prompts_with_user_template_and_vocabulary(cohort, tmp_path):
    (tmp_path / "t.j2").write_text("CT. {% if site is defined %}Site: {{ site }}.{% endif %}")
    (tmp_path / "v.json").write_text(
        '{"attributes": {"site": {"type": "categorical", "values": ["north", "south"]}}}')
    result = runner.invoke(app, ["prompts", "--cohort", str(cohort), "--template",
                                 str(tmp_path / "t.j2"), "--vocabulary", str(tmp_path / "v.json"),
                                 "--attribute", "site", "--values", "South"], env=WIDE)
    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout) == [[s, "south", "CT. Site: south."] for s in ("A1", "B2", "C3")]
    assert f"; template {tmp_path / 't.j2'} (sha256 " in result.stdout


def _fails(args, message, env=WIDE):
    result = runner.invoke(app, ["prompts", *args], env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("cfx: error: ")
    assert message in line, line


def test_attribute_and_values_go_together(cohort):
    _fails(["--cohort", str(cohort), "--attribute", "smoking"],
           "--attribute needs --values: give both (e.g. --attribute smoking --values yes,no) "
           "or neither")
    _fails(["--cohort", str(cohort), "--values", "yes"], "--values needs --attribute")


def test_unknown_columns_and_values(cohort):
    _fails(["--cohort", str(cohort), "--attribute", "pack_years", "--values", "10"],
           "--attribute: 'pack_years' not a column of")
    _fails(["--cohort", str(cohort), "--attribute", "site", "--values", "north"],
           "attribute 'site' is not known; known attributes: age, sex, smoking")
    _fails(["--cohort", str(cohort), "--attribute", "smoking", "--values", "yes,maybe"],
           "--values: smoking: 'maybe' is not an allowed value; allowed: yes, no")


def test_invalid_cohort_value_names_the_subject(cohort):
    (cohort / "clinical.csv").write_text("subject,age\nA1,68\nB2,150\nC3,1\n")
    _fails(["--cohort", str(cohort)], "subject B2: age: 150 is out of range; allowed: a number "
                                      "from 0 to 120 years")


def test_template_errors_name_the_file(cohort, tmp_path):
    (tmp_path / "bad.j2").write_text("{% if age %}")
    _fails(["--cohort", str(cohort), "--template", str(tmp_path / "bad.j2")],
           "bad.j2: template syntax error on line 1")
    (tmp_path / "strict.j2").write_text("Age {{ age }}.")
    _fails(["--cohort", str(cohort), "--template", str(tmp_path / "strict.j2")],
           "strict.j2: 'age' is undefined for subject B2")


@pytest.mark.parametrize("expression", ['"x" * 10**10', "[0] * 10**9", "10 ** 10000000"])
def test_a_prompt_template_that_would_exhaust_memory_is_refused(cohort, tmp_path, expression):
    (tmp_path / "t.j2").write_text(f"CT. {{{{ {expression} }}}}")
    _fails(["--cohort", str(cohort), "--template", str(tmp_path / "t.j2")],
           "the template sandbox refused")
