"""Containment: no path built from data (subject ids, manifest paths, template includes) leaves
its root, for reading or for writing."""

import json
import shutil

import pytest

ESCAPE = "x/../../../../ESCAPED"


def _edit(run, change):
    manifest = json.loads((run / "manifest.json").read_text())
    change(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))


def _rename_subject(new_id):
    def change(manifest):
        old = manifest["settings"]["subjects"][0]
        manifest["settings"]["subjects"][0] = new_id
        manifest["masks"][new_id] = manifest["masks"].pop(old)
        for item in manifest["items"]:
            if item["subject"] == old:
                item["subject"] = new_id
    return change


@pytest.mark.parametrize("bad", [ESCAPE, "../ESCAPED", "/tmp/ESCAPED", ".hidden", "a" * 65,
                                 "sp ace", ""])
def test_render_refuses_a_manifest_subject_id_unsafe_as_a_folder(run, refused, bad):
    _edit(run, _rename_subject(bad))
    refused(["render", run, "-q"], "manifest.json", "subject id", "is not allowed")


@pytest.mark.parametrize("command", ["stats", "audit", "report"])
def test_other_readers_refuse_a_manifest_path_outside_the_run(run, refused, work, command):
    shutil.copy(run / "sub-P000" / "sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz",
                run.parent / "outside_ct.nii.gz")
    _edit(run, lambda m: m["items"][0].update(path="../outside_ct.nii.gz"))
    out = ["--out", work / "report"] if command == "report" else []
    refused([command, run, *out, "-q"], "points outside")


@pytest.mark.parametrize("path", ["../../outside_ct.nii.gz", "/etc/hostname",
                                  "sub-P000/../../../outside_ct.nii.gz"])
def test_render_refuses_a_manifest_path_outside_the_run(run, refused, path):
    shutil.copy(run / "sub-P000" / "sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz",
                run.parent / "outside_ct.nii.gz")
    _edit(run, lambda m: m["items"][0].update(path=path))
    refused(["render", run, "-q"], "manifest.json: items[0].path", "points outside")


def test_render_refuses_a_run_file_that_links_outside(run, refused):
    target = run / "sub-P000" / "sub-P000_attr-smoking_val-no_seed-0_ct.nii.gz"
    outside = run.parent / "outside_ct.nii.gz"
    shutil.move(target, outside)
    target.symlink_to(outside)
    refused(["render", run, "-q"], "items[0].path", "points outside")


def test_render_refuses_a_render_folder_that_links_outside(run, refused, work):
    (work / "elsewhere").mkdir()
    (run / "render").symlink_to(work / "elsewhere")
    refused(["render", run, "-q"], "render folder", "points outside")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("seed", "../x", "seed '../x' is not an integer"),
    ("seed", -1, "seed -1 is not an integer"),
    ("attribute", "../../../x", "attribute '../../../x' is not allowed"),
])
def test_render_refuses_manifest_entities_that_would_break_names(run, refused, field, value,
                                                                  fragment):
    if field == "seed":
        _edit(run, lambda m: [item.update(seed=value) for item in m["items"]])
    else:
        _edit(run, lambda m: m["settings"].update(attribute=value))
    refused(["render", run, "-q"], "manifest.json", fragment)


@pytest.mark.parametrize("bad", ["../evil", "a/b", "x..y", ".hidden", "é", "a" * 65])
def test_cohort_subject_ids_unsafe_as_file_names_are_refused(cohort, refused, bad):
    (cohort / "clinical.csv").write_text(f"subject,age,smoking\n{bad},60,yes\nB,70,no\n",
                                         encoding="utf-8")
    refused(["validate", cohort, "-q"], "clinical.csv, row 2", "subject id", "is not allowed")


def test_sweep_refuses_an_unsafe_subject_id_before_writing(cohort, refused, work):
    (cohort / "clinical.csv").write_text("subject,age,smoking\nA/../../B,60,yes\n")
    refused(["sweep", "-a", "smoking", "--values", "no,yes", "--cohort", cohort, "--model",
             "phantom-oracle", "--out", work / "out", "-q"], "row 2", "is not allowed")


def test_a_mask_named_as_a_hidden_file_is_refused(cohort, refused, work):
    shutil.copy(cohort / "masks" / "A.nii.gz", cohort / "masks" / ".A.nii.gz")
    refused(["sweep", "-a", "smoking", "--values", "no,yes", "--mask",
             cohort / "masks" / ".A.nii.gz", "--model", "phantom-oracle", "--out", work / "out",
             "-q"], "--mask", "subject id '.A' is not allowed")


def test_a_report_template_that_is_a_symbolic_link_is_refused(run, refused, work):
    (work / "secret.txt").write_text("SECRET")
    (work / "mine.md").symlink_to(work / "secret.txt")
    refused(["report", run, "--template", work / "mine.md", "-q"], "mine.md is a symbolic link")


def test_a_report_template_cannot_include_files_beside_it(run, refused, work):
    (work / "secret.txt").write_text("SECRET")
    (work / "mine.md").write_text("{% include 'user/secret.txt' %}")
    refused(["report", run, "--template", work / "mine.md", "--out", work / "report", "-q"],
            "includes user/secret.txt, which is neither a template cfx ships")
