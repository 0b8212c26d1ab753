"""``cfx stats``: region HU shifts of a sweep, paired tests beside the noise floor, voxel maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from analysis.permutation import one_sample_permutation
from analysis.regions import RegionItem, region_table
from analysis.stats.effects import effect_table
from counterfactual.atomic import staged_dir
from counterfactual.cli.app import app
from counterfactual.errors import UserInputError
from counterfactual.labels import DEFAULT_VOCABULARY, load_vocabulary
from counterfactual.sweep.manifest import read_manifest, write_json
from counterfactual.sweep.naming import diff_name, value_label
from counterfactual.volume import read_labels, read_volume, write_volume

_HEADLINE = ("mean", "pd15", "laa950")


def _items(run: Path, manifest: dict, vocabulary):
    for item in manifest["items"]:
        ct = read_volume(run / item["path"])
        mask = read_labels(manifest["masks"][item["subject"]], vocabulary)
        yield RegionItem(item["subject"], item["value"], item["seed"], ct.data, mask.data,
                         ct.affine)


def _voxelwise(run: Path, manifest: dict, out: Path, lung: tuple[int, ...], n_permutations: int,
               tfce: bool) -> dict:
    settings = manifest["settings"]
    attribute, reference = settings["attribute"], settings["reference"]
    maps = {}
    for value in settings["values"]:
        if value == reference:
            continue
        per_subject, union, affine = [], None, None
        for subject in settings["subjects"]:
            diffs = [read_volume(run / diff_name(subject, attribute, value_label(value),
                                                 value_label(reference), seed))
                     for seed in settings["seeds"]]
            if affine is None:
                affine, shape = diffs[0].affine, diffs[0].shape
            if diffs[0].shape != shape or not np.allclose(diffs[0].affine, affine, atol=1e-3):
                raise UserInputError(f"--voxelwise: subject {subject} is on another grid than "
                                     f"{settings['subjects'][0]}; voxelwise tests need subjects "
                                     "on a common grid (register them first)")
            per_subject.append(np.mean([d.data for d in diffs], axis=0))
            mask = np.isin(read_labels(manifest["masks"][subject]).data, lung)
            union = mask if union is None else union | mask
        try:
            result = one_sample_permutation(np.stack(per_subject), n_permutations=n_permutations,
                                            tfce=tfce, mask=union, random_state=0)
        except ValueError as exc:
            raise UserInputError(f"--voxelwise: {exc}") from None
        contrast = f"{value_label(value)}-vs-{value_label(reference)}"
        names = {"mean": result.mean, "t": result.t, "pfwe": result.p_fwe, "qfdr": result.q_fdr}
        if tfce:
            names |= {"tfce": result.tfce, "ptfce": result.p_tfce}
        for stat, data in names.items():
            write_volume(out / f"attr-{attribute}_contrast-{contrast}_stat-{stat}.nii.gz",
                         np.nan_to_num(data, nan=0.0).astype(np.float32), affine)
        maps[contrast] = {"voxels_tested": int(union.sum()),
                          "voxels_fwe_05": int(np.nansum(result.p_fwe < 0.05))}
    return maps


@app.command()
def stats(
    run: Path = typer.Argument(..., help="Run folder made by cfx sweep."),
    region: list[str] = typer.Option(["lung"], "--region", help="Region to measure (repeatable)."),
    zones: bool = typer.Option(True, "--zones/--no-zones",
                               help="Also upper/middle/lower thirds of each region."),
    voxelwise: bool = typer.Option(False, "--voxelwise", help="Sign-flip permutation maps."),
    permutations: int = typer.Option(5000, "--permutations", help="Sign flips for voxel maps."),
    tfce: bool = typer.Option(False, "--tfce", help="Also TFCE with its own FWE p-map."),
    labels: Path | None = typer.Option(None, "--labels", help="Label vocabulary JSON file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No table."),
) -> None:
    """Region metrics per item, paired effects of each value vs the reference with the noise
    floor, and (optionally) voxelwise FWE maps, written to RUN/stats/."""
    vocabulary = DEFAULT_VOCABULARY if labels is None else load_vocabulary(labels)
    regions = {name: vocabulary.region_labels(name) for name in region}
    if permutations < 1:
        raise UserInputError(f"--permutations: must be >= 1, got {permutations}")
    manifest = read_manifest(run)
    if not manifest.get("complete"):
        raise UserInputError(f"{run}: the sweep is incomplete; finish it with cfx sweep --resume")
    settings = manifest["settings"]
    try:
        table = region_table(_items(run, manifest, vocabulary), regions,
                             zones=list(region) if zones else ())
        effects = effect_table(table, settings["reference"])
    except ValueError as exc:
        raise UserInputError(f"{run}: {exc}") from None
    with staged_dir(run / "stats", replace=True) as out:
        table.to_csv(out / "regions.csv", index=False)
        effects.to_csv(out / "effects.csv", index=False)
        maps = (_voxelwise(run, manifest, out, vocabulary.region_labels("lung"), permutations,
                           tfce) if voxelwise else {})
        summary = {"run": str(run), "attribute": settings["attribute"],
                   "reference": settings["reference"], "regions": regions,
                   "effects": json.loads(effects.to_json(orient="records")), "voxelwise": maps}
        write_json(out / "summary.json", summary)
    if not quiet:
        Console().print(_headline(effects, settings["attribute"]))


def _headline(effects: pd.DataFrame, attribute: str) -> Table:
    table = Table(title=f"{attribute}: paired effect (value - reference) and noise floor")
    for column in ("value", "region", "metric", "Δ mean [95% CI]", "p (Holm)", "noise floor"):
        table.add_column(column)
    rows = effects[effects["metric"].isin(_HEADLINE)]
    for row in rows.itertuples():
        noise = ("—" if pd.isna(getattr(row, "noise_estimate", np.nan)) else
                 f"{row.noise_estimate:+.2f} [{row.noise_ci_low:+.2f}, {row.noise_ci_high:+.2f}]")
        p = "—" if pd.isna(row.p_t_holm) else f"{row.p_t_holm:.3g}"
        table.add_row(f"{row.value} vs {row.reference}", row.region, f"{row.metric} ({row.unit})",
                      f"{row.estimate:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}]", p, noise)
    return table
