"""The ``cfx report`` recipe: a self-contained HTML + Markdown report of a run, with figures
and tables.

Reads the run's ``manifest.json`` and ``stats/`` (from ``cfx stats``), the panel animations of
``render/`` when ``cfx render`` made them (else draws the few it shows, as animated PNG), and
``audit/audit.json`` when it exists; writes ``figures/`` (PNG + PDF, animations), ``tables/`` (CSV +
LaTeX), ``report.md`` and ``index.html`` into one folder that opens offline. Every number in it
comes from the stats outputs.

Still montages (``ct_montage``, ``difference_montage``) show ``--slices`` axial slices evenly
spaced through the lungs; each figure has one colour scale (the CT window, or ±the 99th
percentile of |Δ| in the lungs over every subject and contrast shown, rounded up), stated in the
context for the caption. The voxelwise figure shows the mean Δ (HU) where p_FWE < 0.05.

:func:`run_report` takes a :class:`ReportConfig` (what ``cfx report`` parsed) and returns the
folder it wrote; the CLI only parses and prints.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from markdown_it import MarkdownIt
from markupsafe import Markup

from cfx.analysis.figures._common import pick_slices
from cfx.analysis.figures.difference import difference_figure
from cfx.analysis.figures.dose_response import dose_response_figure
from cfx.analysis.figures.forest import forest_figure
from cfx.analysis.figures.histogram import LAA_THRESHOLD, hu_histogram_figure
from cfx.analysis.figures.montage import montage_figure
from cfx.analysis.figures.noise import NOISE_LABEL, delta_noise_figure
from cfx.analysis.figures.output import save_figure
from cfx.analysis.figures.paired import paired_values_figure
from cfx.analysis.figures.statmap import stat_map_figure
from cfx.analysis.render.colour import DIFF_CMAP, parse_window
from cfx.analysis.render.gif import ANIMATION_WRITERS, symmetric_limit
from cfx.analysis.report import (
    BUILTIN,
    TemplateError,
    check_template,
    find_templates,
    key_values,
    render_report,
)
from cfx.analysis.stats.grid import SweepGrid
from cfx.counterfactual.atomic import staged_dir
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.panels import contrast_panel, value_title
from cfx.counterfactual.progress import track
from cfx.counterfactual.run_folder import RunFolder
from cfx.counterfactual.sweep.generators import KNOWN_MODELS
from cfx.counterfactual.sweep.naming import subject_dir, value_label
from cfx.counterfactual.volume import Volume

__all__ = ["ReportConfig", "run_report"]


@dataclass(frozen=True)
class ReportConfig:
    """What ``cfx report`` writes (already parsed).

    Attributes
    ----------
    run : Path
        Run folder made by ``cfx sweep`` with ``stats/`` from ``cfx stats``.
    template : str
        ``summary``, ``paper`` or a Jinja2 file (``*.html`` or ``*.md``).
    out : Path, optional
        Report folder; default ``RUN/report/<template>``.
    subjects : int
        Subjects shown in animations and maps, >= 1.
    slices : int
        Axial slices per still montage and map, >= 1.
    include : tuple of Path
        Files a user template may include (as ``user/<file name>``).
    labels : LabelVocabulary, optional
        The user's ``--labels`` (its labels must be the run's); default: the run's.
    verify : bool
        Check every volume shown against the sha256 its manifest recorded.
    quiet : bool
        No progress bar.
    """

    run: Path
    template: str = "summary"
    out: Path | None = None
    subjects: int = 4
    slices: int = 5
    include: tuple[Path, ...] = ()
    labels: LabelVocabulary | None = None
    verify: bool = True
    quiet: bool = False


_STATS = ("regions.csv", "effects.csv", "summary.json")
_HEADLINE = ("mean", "pd15", "laa950")
_REGION_COLUMNS = ("subject", "value", "seed", "region", "metric", "estimate")
_EFFECT_COLUMNS = ("value", "reference", "region", "metric", "estimate", "ci_low", "ci_high",
                   "verdict", "body_estimate")
_CONTROLS = tuple(f"{region}_{statistic}" for region in ("body", "outside_body", "adjusted")
                  for statistic in ("estimate", "ci_low", "ci_high"))
_SHOWN = ("unit", "estimate", "ci_low", "ci_high", "p_t_holm", "d_z", "n_subjects", "n_seeds",
          "noise_estimate", "noise_ci_low", "noise_ci_high", *_CONTROLS, "note")
_AXIS, _WINDOW, _FPS, _SIZE = "axial", "lung", 8.0, 256
_ALPHA = 0.05
_CONFIDENCE = 0.95


def _check_out(out: Path, run: Path) -> None:
    """Refuse an --out that would replace the run (or a folder holding it) or foreign files."""
    target, source = out.resolve(), run.resolve()
    if target == source or target in source.parents:
        raise UserInputError(f"--out: {out} is the run folder or holds it; the report would "
                             "replace it; choose a folder for the report")
    if target.exists() and not target.is_dir():
        raise UserInputError(f"--out: {out} is a file; give a folder")
    if target.is_dir() and any(target.iterdir()) and not all(
            (target / name).is_file() for name in ("index.html", "report.md")):
        raise UserInputError(f"--out: {out} is a non-empty folder that is not a cfx report; "
                             "choose a new or empty folder")


def _read_stats(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    folder = run / "stats"
    missing = [name for name in _STATS if not (folder / name).is_file()]
    if missing:
        raise UserInputError(f"{run}: no statistics ({folder / missing[0]} is missing); run "
                             f"cfx stats {run} first")
    try:
        regions = pd.read_csv(folder / "regions.csv", dtype={"value": str, "subject": str})
        effects = pd.read_csv(folder / "effects.csv", dtype={"value": str, "reference": str},
                              keep_default_na=True)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (ValueError, pd.errors.ParserError) as exc:
        raise UserInputError(f"{folder}: damaged stats output ({exc}); run cfx stats {run} "
                             "again") from None
    for frame, name, columns in ((regions, "regions.csv", _REGION_COLUMNS),
                                 (effects, "effects.csv", _EFFECT_COLUMNS)):
        missing = [c for c in columns if c not in frame]
        if missing:
            raise UserInputError(f"{folder / name}: missing column(s) {', '.join(missing)}; run "
                                 f"cfx stats {run} again")
    if "specificity_ratio" not in summary:
        raise UserInputError(f"{folder / 'summary.json'}: made by an older cfx stats without "
                             f"negative controls; run cfx stats {run} again")
    for column in _SHOWN:  # no noise floor with one seed, no outside-body air in a cropped CT
        if column not in effects:
            effects[column] = np.nan
    effects["note"] = effects["note"].fillna("").astype(str)
    effects["verdict"] = effects["verdict"].fillna("n/a")  # pandas reads "n/a" as missing
    return regions, effects, summary


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain dicts; missing numbers stay NaN (the templates' filters print a dash)."""
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def _model_card(model: str) -> str | None:
    """The model's checkpoint README.md (its model card, Markdown), if there is one."""
    if model in KNOWN_MODELS:
        return None
    from cfx.counterfactual.sweep.learned import find_checkpoint  # imports torch: only when needed

    folder = find_checkpoint(model)
    card = None if folder is None else folder / "README.md"
    if card is None or not card.is_file():
        return None
    return card.read_text(encoding="utf-8").strip()


def _card_html(card: str | None) -> Markup | None:
    """The model card as HTML (CommonMark with tables; raw HTML in the card is escaped)."""
    if card is None:
        return None
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(card))


def _audit(run: Path) -> dict | None:
    """The audit for the templates: None when there is none; else ``path``, ``format``,
    ``verdict`` and ``reason`` (overall), ``criteria`` (one dict per criterion: ``name``,
    ``status``, ``verdict``, ``reason``, ``metric``, ``value``, ``unit``, ``threshold``, ``others``
    (the other thresholds as text)) and, for a file of another format (no verdicts), ``note`` and
    ``rows`` (its flattened key/value pairs) instead of ``criteria``."""
    from cfx.analysis.audit import Threshold
    from cfx.counterfactual.audit import AUDIT_FORMAT

    path = run / "audit" / "audit.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: damaged ({exc.msg} at line {exc.lineno}); run cfx audit "
                             "again or remove it") from None
    found = data.get("format") if isinstance(data, dict) else None
    entry = {"path": "audit/audit.json", "format": found, "verdict": None, "reason": "",
             "criteria": [], "note": "", "rows": []}
    if found != AUDIT_FORMAT:
        return entry | {"rows": key_values(data), "note": (
            f"This audit file is {found or 'of an unknown format'}, not {AUDIT_FORMAT}: it has "
            f"no verdicts and is shown as it is; run cfx audit {run.name} again for them.")}
    try:
        criteria = []
        for name, criterion in data["criteria"].items():
            key = criterion["key_metric"]
            thresholds = [Threshold.from_json(t) for t in criterion["thresholds"]]
            metric = criterion["metrics"].get(key, {}) if key else {}
            criteria.append({
                "name": name, "status": criterion["status"], "verdict": criterion["verdict"],
                "reason": criterion["reason"], "metric": key, "value": metric.get("value"),
                "unit": "" if metric.get("unit", "1") == "1" else metric["unit"],
                "threshold": next((t.text() for t in thresholds if t.metric == key), ""),
                "others": [f"{t.metric}: {t.text()}" for t in thresholds if t.metric != key]})
        return entry | {"verdict": data["verdict"], "reason": data["verdict_reason"],
                        "criteria": criteria}
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(f"{path}: damaged (missing or malformed entry {exc}); run cfx audit "
                             "again or remove it") from None


@dataclass(frozen=True)
class _View:
    """The run as the report shows it (values as text, lungs as the statistics counted them);
    every file is read through ``folder``."""

    folder: RunFolder
    lung_labels: tuple[int, ...]

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def attribute(self) -> str:
        return self.folder.attribute

    @property
    def values(self) -> list[str]:
        return [str(v) for v in self.folder.values]

    @property
    def reference(self) -> str:
        return str(self.folder.reference)

    @property
    def seeds(self) -> list[int]:
        return list(self.folder.seeds)

    @property
    def subjects(self) -> list[str]:
        return list(self.folder.subjects)

    def ct(self, subject: str, seed: int, value: str) -> Volume:
        return self.folder.ct(subject, value, seed)

    def diff(self, subject: str, value: str, seed: int) -> Volume:
        return self.folder.difference(subject, value, seed)

    def lung(self, subject: str) -> np.ndarray:
        return np.isin(self.folder.mask(subject).data, self.lung_labels)

    def contrast(self, value: str) -> str:
        return f"{value_label(value)}-vs-{value_label(self.reference)}"

    def files(self, shown: list[str]) -> list[Path]:
        """The run files the report may read: every CT of the first seed (histogram, panels,
        background) and the shown subjects' difference maps."""
        seed = self.seeds[0]
        return ([self.folder.ct_path(s, v, seed) for s in self.subjects for v in self.values]
                + [self.folder.difference_path(s, v, k) for s in shown for k in self.seeds
                   for v in self.values if v != self.reference])


def _figure(jobs: list, out: Path, key: str, draw, **extra) -> dict:
    """Plan figure ``key`` (drawn later by ``draw()``); return its entry for the templates."""
    jobs.append(lambda: save_figure(draw(), out / "figures" / key))
    return {"key": key, "png": f"figures/{key}.png", "pdf": f"figures/{key}.pdf", **extra}


def _figures(jobs: list, out: Path, run: _View, regions: pd.DataFrame, effects: pd.DataFrame,
             summary: dict, region: str, shown: list[str], slices: int) -> dict:
    figures = _montages(jobs, out, run, shown, slices)
    figures |= {"paired": _figure(jobs, out, "paired_values", lambda: paired_values_figure(
        regions, region, "mean", run.values), region=region, metric="mean")}
    grid = SweepGrid.from_table(regions, [run.reference] + [v for v in run.values
                                                            if v != run.reference])
    figures["noise"] = _figure(jobs, out, "delta_noise_floor",
                               lambda: _noise_figure(grid, effects, region), region=region,
                               metric="mean", noise=grid.n_seeds > 1)
    figures["histogram"] = _figure(jobs, out, "hu_histogram",
                                   lambda: _histogram_figure(run, region), region=region,
                                   seed=run.seeds[0], threshold=LAA_THRESHOLD)
    dose = _dose_rows(summary, region)
    if dose:
        figures["dose"] = _figure(jobs, out, "dose_response",
                                  lambda: _dose_figure(regions, effects, dose[0], run),
                                  region=region, metric="mean")
    metrics = [m for m in _HEADLINE if m in set(effects["metric"])] or None
    figures["forest"] = _figure(jobs, out, "forest",
                                lambda: forest_figure(effects, metrics=metrics))
    figures["differences"], figures["statmaps"] = [], []
    stems = {}
    for value in run.values:
        if value == run.reference:
            continue
        contrast, label = run.contrast(value), f"{value} - {run.reference}"
        figures["differences"].append(_figure(
            jobs, out, f"difference_{contrast}",
            lambda v=value: _difference_figure(run, v, shown), contrast=label))
        stem = run.root / "stats" / f"attr-{run.attribute}_contrast-{contrast}_stat-"
        if all(Path(f"{stem}{m}.nii.gz").is_file() for m in ("mean", "pfwe")):
            stems[label] = (contrast, stem)
    limit = _survivor_limit([stem for _, stem in stems.values()])
    for label, (contrast, stem) in stems.items():
        counts = summary.get("voxelwise", {}).get(contrast, {})
        figures["statmaps"].append(_figure(
            jobs, out, f"meanmap_{contrast}",
            lambda s=stem: _stat_figure(run, s, limit, slices), contrast=label, alpha=_ALPHA,
            limit=limit, voxels_tested=counts.get("voxels_tested"),
            voxels_fwe=counts.get("voxels_fwe_05")))
    return figures


def _same_grid(run: _View, subjects: list[str]) -> list[str]:
    """The subjects whose CT shares the first one's grid (shape and affine)."""
    seed, first = run.seeds[0], run.ct(subjects[0], run.seeds[0], run.reference)
    return [s for s in subjects if (ct := run.ct(s, seed, run.reference)).shape == first.shape
            and np.allclose(ct.affine, first.affine)]


def _montages(jobs: list, out: Path, run: _View, shown: list[str], slices: int) -> dict:
    """Plan the still CT-pair and difference montages (first seed; differences averaged over
    seeds); slices evenly spaced through the union of the subjects' lungs, one scale each."""
    seed, subjects = run.seeds[0], _same_grid(run, shown)
    affine = run.ct(subjects[0], seed, run.reference).affine
    lungs = {s: run.lung(s) for s in subjects}
    picks = pick_slices(np.any(list(lungs.values()), axis=0), affine, "axial", slices)
    width, level = parse_window(_WINDOW)
    contrasts = [v for v in run.values if v != run.reference]
    diffs = {f"{s} {v} - {run.reference}": np.mean([run.diff(s, v, k).data for k in run.seeds],
                                                   axis=0)
             for s in subjects for v in contrasts}
    masks = {f"{s} {v} - {run.reference}": lungs[s] for s in subjects for v in contrasts}
    limit = symmetric_limit(np.stack(list(diffs.values())), np.stack(list(masks.values())))

    def cts() -> dict[str, np.ndarray]:  # read when drawn
        return {f"{s} {v}": run.ct(s, seed, v).data for s in subjects for v in run.values}

    ct_label = f"HU, {_WINDOW} window (W {width:g} / L {level:g})"
    return {
        "ct_montage": _figure(jobs, out, "ct_montage", lambda: montage_figure(
            cts(), affine, picks, (level - width / 2, level + width / 2), label=ct_label),
            subjects=subjects, seed=seed, window=_WINDOW, width=width, level=level,
            n_slices=len(picks)),
        "difference_montage": _figure(jobs, out, "difference_montage", lambda: montage_figure(
            diffs, affine, picks, (-limit, limit), cmap=DIFF_CMAP, outlines=masks,
            label=f"Δ HU (±{limit:g})"), subjects=subjects, limit=limit,
            n_seeds=len(run.seeds), n_slices=len(picks)),
    }


def _dose_rows(summary: dict, region: str) -> list[dict]:
    """The headline metrics' dose-response rows of ``region`` (mean first), if stats made them."""
    rows = [r for r in summary.get("dose_response", []) if r["region"] == region
            and r["metric"] in _HEADLINE]
    return sorted(rows, key=lambda r: _HEADLINE.index(r["metric"]))


def _dose_figure(regions: pd.DataFrame, effects: pd.DataFrame, dose: dict, run: _View):
    rows = effects[(effects["region"] == dose["region"]) & (effects["metric"] == dose["metric"])]
    band = rows[["noise_ci_low", "noise_ci_high"]].dropna()
    return dose_response_figure(
        regions, dose["region"], dose["metric"], reference=float(run.reference),
        noise_band=tuple(band.iloc[0]) if len(band) else None,
        slope=None if dose["slope"] is None else dose["slope"] / dose["per"],
        unit=dose["unit"], label=run.attribute)


def _noise_figure(grid: SweepGrid, effects: pd.DataFrame, region: str):
    column = (region, "mean")
    rows = effects[(effects["region"] == region) & (effects["metric"] == "mean")]
    deltas, intervals = {}, {}
    for row in rows.itertuples():
        label = f"{row.value} - {row.reference}"
        deltas[label] = grid.deltas(row.value, row.reference)[column].to_numpy()
        if np.isfinite([row.estimate, row.ci_low, row.ci_high]).all():
            intervals[label] = (row.estimate, row.ci_low, row.ci_high)
        noise_ci = [row.noise_estimate, row.noise_ci_low, row.noise_ci_high]
        if np.isfinite(noise_ci).all():
            intervals[NOISE_LABEL] = tuple(noise_ci)
    noise = grid.seed_deltas(grid.values)[column].to_numpy() if grid.n_seeds > 1 else None
    unit = str(rows["unit"].iloc[0]) if len(rows) else ""
    return delta_noise_figure(deltas, noise, intervals, unit=unit, label=f"{region} mean")


def _histogram_figure(run: _View, region: str):
    seed = run.seeds[0]
    samples = {value: np.concatenate([run.ct(s, seed, value).data[run.lung(s)]
                                      for s in run.subjects]) for value in run.values}
    return hu_histogram_figure(samples, region=region)


def _difference_figure(run: _View, value: str, shown: list[str]):
    """Seed-averaged difference maps of the shown subjects on the first one's grid."""
    maps = {s: np.mean([run.diff(s, value, k).data for k in run.seeds], axis=0) for s in shown}
    first = run.diff(shown[0], value, run.seeds[0])
    same = [s for s in shown if maps[s].shape == first.shape]
    return difference_figure({s: maps[s] for s in same}, first.affine,
                             mask={s: run.lung(s) for s in same})


def _stat_map(path: Path) -> Volume:
    """A statistic map as cfx stats wrote it (float32; may hold ±inf where Δ has no spread)."""
    try:
        image = nib.load(path)
        return Volume(np.asarray(image.dataobj, dtype=np.float32), image.affine, str(path))
    except Exception as exc:  # nibabel raises many types for damaged files
        raise UserInputError(f"{path}: cannot be read ({exc}); run cfx stats again") from None


def _survivor_limit(stems: list[Path]) -> float:
    """One ±limit (HU) for every mean-Δ map: 99 % of |mean Δ| among the voxels with
    p_FWE < alpha of every contrast, rounded up (1 when none survives)."""
    values = []
    for stem in stems:
        mean, p = _stat_map(Path(f"{stem}mean.nii.gz")), _stat_map(Path(f"{stem}pfwe.nii.gz"))
        if mean.shape == p.shape:
            values.append(mean.data[(p.data < _ALPHA) & np.isfinite(mean.data)])
    return symmetric_limit(np.concatenate(values)) if values else 1.0


def _stat_figure(run: _View, stem: Path, limit: float, slices: int):
    t = _stat_map(Path(f"{stem}mean.nii.gz"))
    p = _stat_map(Path(f"{stem}pfwe.nii.gz"))
    p = None if p.shape != t.shape else p.data
    union = np.zeros(t.shape, bool)
    for subject in run.subjects:
        lung = run.lung(subject)
        if lung.shape == t.shape:
            union |= lung
    background = run.ct(run.subjects[0], run.seeds[0], run.reference)
    base = background.data if background.shape == t.shape else None
    return stat_map_figure(t.data, t.affine, p, mask=union if union.any() else None,
                           background=base, alpha=_ALPHA, limit=limit, n_slices=slices,
                           label="mean Δ (HU)")


def _animation(jobs: list, out: Path, rendered: list[Path], stem: str, make) -> str:
    """Plan an animation: a hard link to the newest of ``rendered`` that exists (what cfx render
    wrote last, ``.png`` or ``.gif``; no byte stored twice, and safe: cfx render replaces a file
    by a new one, never rewrites it in place), a copy where the file system cannot link, or, when
    render made none, ``make()``'s frames drawn as an animated PNG. Returns the path linked."""
    made = [p for p in rendered if p.is_file()]
    existing = max(made, key=lambda p: p.stat().st_mtime_ns) if made else None
    name = existing.name if existing is not None else f"{stem}.png"
    target = out / "figures" / "animations" / name

    def job():
        target.parent.mkdir(parents=True, exist_ok=True)
        if existing is not None and existing.is_file():
            try:
                os.link(existing, target)
            except OSError:  # another file system, or one without hard links
                shutil.copyfile(existing, target)
        else:  # none rendered, or it went away since: drawn in the format linked
            ANIMATION_WRITERS[target.suffix[1:]](target, make(), _FPS)

    jobs.append(job)
    return f"figures/animations/{name}"


def _gifs(jobs: list, out: Path, run: _View, shown: list[str]) -> dict:
    """Plan the reference | counterfactual | difference panel animation of each shown subject
    and contrast at the first seed: ``cfx render``'s own file when it made one, else drawn the
    same way (a panel shows both volumes and their difference: no per-volume one is needed)."""
    seed = run.seeds[0]
    render = run.root / "render"
    where = str(run.root / "manifest.json")
    panels = []
    for subject in shown:
        for value in run.values:
            if value == run.reference:
                continue
            stem = run.folder.difference_path(subject, value, seed).name.removesuffix(
                "_diff.nii.gz") + f"_axis-{_AXIS}_panel"
            folder = subject_dir(render, subject, where)
            path = _animation(jobs, out, [folder / f"{stem}.png", folder / f"{stem}.gif"], stem,
                              lambda s=subject, v=value: _panel_frames(run, s, seed, v))
            panels.append({"subject": subject, "seed": seed, "value": value, "path": path,
                           "title": f"{value_title(run.attribute, run.reference)} | "
                                    f"{value_title(run.attribute, value)} | difference"})
    return {"panels": panels}


def _panel_frames(run: _View, subject: str, seed: int, value: str) -> np.ndarray:
    """The reference | counterfactual | difference animation, as cfx render makes it."""
    diff = run.diff(subject, value, seed)
    return contrast_panel(run.ct(subject, seed, run.reference), run.ct(subject, seed, value), diff,
                          run.lung(subject), run.attribute, value, run.reference, _AXIS, _WINDOW,
                          _SIZE)


def _tables(out: Path, run_root: Path, headline: pd.DataFrame) -> dict:
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("effects.csv", "regions.csv"):
        shutil.copyfile(run_root / "stats" / name, folder / name)
    headline.to_csv(folder / "headline.csv", index=False)
    return {"effects_csv": "tables/effects.csv", "regions_csv": "tables/regions.csv",
            "headline_csv": "tables/headline.csv", "effects_tex": "tables/effects.tex"}


def _methods(manifest: dict, summary: dict, info: _View) -> dict:
    """What the methods paragraph states, from the run's manifest and its stats summary."""
    settings = manifest["settings"]
    sampling = settings.get("sampling") or {}
    voxelwise = list(summary.get("voxelwise", {}).values())
    first = voxelwise[0] if voxelwise else {}
    return {
        "model": str(manifest.get("model", {}).get("name", settings.get("model", ""))),
        "sampling": ", ".join(f"{k} {v}" for k, v in sampling.items()),
        "n_subjects": len(info.subjects), "n_seeds": len(info.seeds),
        "n_contrasts": len(info.values) - 1, "confidence": _CONFIDENCE,
        "voxelwise": bool(voxelwise), "permutations": first.get("permutations"),
        "exhaustive": bool(first.get("exhaustive")), "tail": first.get("tail", "none"),
        "tfce": any("tfce" in " ".join(v.get("maps", [])) for v in voxelwise),
        "alpha": _ALPHA, "specificity_ratio": summary["specificity_ratio"],
        "control_regions": [r for r in summary.get("control_regions", {}) if r != "whole"],
        "held": sampling.get("keep_outside"),  # --keep-outside: the controls held to the CT
        "laa_threshold": LAA_THRESHOLD,
    }


def _template_name(template: str) -> str:
    return template if template in BUILTIN else Path(template).name.split(".")[0]


def run_report(config: ReportConfig) -> Path:
    """Write ``index.html``, ``report.md``, ``figures/`` and ``tables/`` for a run.

    Parameters
    ----------
    config : ReportConfig

    Returns
    -------
    Path
        The report folder written.

    Raises
    ------
    UserInputError
        A bad template or option, a run without statistics or whose volumes differ from their
        recorded sha256, an output folder that is not a report: before anything is written.
    """
    template, subjects, slices, include = (config.template, config.subjects, config.slices,
                                           list(config.include))
    run, quiet = config.run, config.quiet
    # 1. check the template and the options, before any file is read
    try:
        templates = find_templates()
    except TemplateError as exc:
        raise UserInputError(str(exc)) from None
    try:
        check_template(template, templates, includes=include)
    except TemplateError as exc:
        raise UserInputError(f"--{exc}") from None  # messages start "template: <value>"
    if subjects < 1:
        raise UserInputError(f"--subjects: must be >= 1, got {subjects}")
    if slices < 1:
        raise UserInputError(f"--slices: must be >= 1, got {slices}")
    # 2. the run and its statistics; every volume shown is checked before anything is written
    folder = RunFolder.open(run, config.labels, verify=config.verify)
    manifest = folder.manifest
    regions, effects, summary = _read_stats(run)
    out = run / "report" / _template_name(template) if config.out is None else config.out
    _check_out(out, run)

    stats_labels = summary.get("regions", {})
    region = "lung" if "lung" in set(effects["region"]) else str(effects["region"].iloc[0])
    lung_labels = tuple(stats_labels.get("lung", folder.labels.region_labels("lung")))
    info = _View(folder, lung_labels)
    shown = info.subjects[:subjects]
    folder.check(info.files(shown))  # every volume it reads, before anything is written
    order = {m: i for i, m in enumerate(_HEADLINE)}
    headline = effects[(effects["region"] == region) & effects["metric"].isin(_HEADLINE)]
    headline = headline.sort_values("metric", key=lambda m: m.map(order), kind="stable")
    # 3. the template's context: every number from the stats outputs
    prompts = [{"value": value, "text": folder.item(info.subjects[0], value,
                                                    info.seeds[0])["prompt"]}
               for value in info.values]
    model = manifest.get("model", {})
    card = _model_card(str(manifest["settings"].get("model", "")))
    context = {
        "title": f"{info.attribute}: {' vs '.join(info.values)}",
        "run": {"name": run.resolve().name, "path": str(run)},
        "attribute": info.attribute, "reference": info.reference, "values": info.values,
        "contrasts": [{"value": v, "reference": info.reference,
                       "label": f"{v} vs {info.reference}"}
                      for v in info.values if v != info.reference],
        "seeds": info.seeds, "subjects": info.subjects,
        "model": {"name": model.get("name", manifest["settings"].get("model", "")),
                  "content_hash": model.get("content_hash", ""),
                  "text_encoder": model.get("text_encoder"),
                  "card": card, "card_html": _card_html(card)},
        "methods": _methods(manifest, summary, info),
        "prompts": prompts,
        "created": manifest.get("created", ""), "cfx_version": manifest.get("cfx_version", ""),
        "command": " ".join(manifest.get("command", [])),
        "headline_region": region, "headline": _records(headline),
        "specificity_ratio": summary["specificity_ratio"],
        "dose": _dose_rows(summary, region),
        "effects": _records(effects), "voxelwise": summary.get("voxelwise", {}),
        "audit": _audit(run), "verified": config.verify,
    }
    # 4. render the templates, then draw the figures and animations, into one staged folder
    with staged_dir(out, replace=True) as tmp:
        jobs: list = []  # figures and animations, drawn after the templates (fail fast)
        context["figures"] = _figures(jobs, tmp, info, regions, effects, summary, region, shown,
                                      slices)
        stills_only = template == "paper"  # a paper shows no animation: none copied or drawn
        context["gifs"] = _gifs([] if stills_only else jobs, tmp, info, shown)
        context["tables"] = _tables(tmp, run, headline)
        try:
            render_report(tmp, context, template, templates, includes=include)
        except TemplateError as exc:
            raise UserInputError(str(exc)) from None
        for job in track(jobs, "report", quiet=quiet):
            job()
        if config.out is None:
            _link_siblings(tmp, out)
    return out


def _link_siblings(folder: Path, out: Path) -> int:
    """Hard-link each figure or table in ``folder`` (staged for ``out``) that another template's
    report beside ``out`` holds byte for byte at the same path (figures are written without a
    date, so both templates draw the same bytes; a report is replaced whole, never rewritten in
    place, so a link never changes under the other). Returns the number of files linked."""
    linked = 0
    siblings = [d for d in out.parent.iterdir() if d.is_dir() and d.name != out.name
                and not d.name.startswith(".")]
    for path in sorted(p for sub in ("figures", "tables") for p in (folder / sub).rglob("*")
                       if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(folder)
        for sibling in siblings:
            twin = sibling / relative
            if twin.is_file() and not twin.is_symlink() and filecmp.cmp(path, twin, False):
                if not os.path.samefile(path, twin):
                    link = path.with_name(f".{path.name}.link")
                    try:
                        os.link(twin, link)
                    except OSError:  # another file system, or one without hard links
                        break
                    os.replace(link, path)
                    linked += 1
                break
    return linked
