"""The sweep: every subject × value × seed, generated in pairs that share their noise.

``run_sweep`` reads as a numbered recipe: check inputs, plan the items, open (or resume) the run
folder, generate group by group, write CTs and difference maps, keep the manifest current.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from counterfactual import __version__
from counterfactual.attributes import DEFAULT_ATTRIBUTES, AttributeVocabulary, edit
from counterfactual.cohort import Cohort, Subject
from counterfactual.errors import UserInputError
from counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from counterfactual.progress import console, track
from counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from counterfactual.sweep.generators import CounterfactualGenerator, Request
from counterfactual.sweep.lock import run_lock
from counterfactual.sweep.manifest import (
    MANIFEST,
    check_same_settings,
    dataset_description,
    package_versions,
    read_manifest,
    sha256,
    write_json,
)
from counterfactual.sweep.naming import ct_name, diff_name, value_labels
from counterfactual.volume import read_labels, write_volume

__all__ = ["SweepConfig", "SweepResult", "run_sweep", "noise_seed"]


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep. ``values`` are canonical; ``reference`` is one of them."""

    attribute: str
    values: tuple
    seeds: tuple[int, ...]
    out: Path
    reference: object = None
    resume: bool = False
    quiet: bool = False
    command: tuple[str, ...] = ()
    attributes: AttributeVocabulary = DEFAULT_ATTRIBUTES
    labels: LabelVocabulary = DEFAULT_VOCABULARY

    @property
    def reference_value(self):
        return self.values[0] if self.reference is None else self.reference


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did."""

    out: Path
    items: int
    generated: int
    reused: int
    seconds: float
    seconds_per_volume: float
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Group:
    """One subject and seed: all values generated together from one noise draw."""

    subject: Subject
    seed: int
    requests: tuple[Request, ...]


def _check_inputs(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator):
    config.attributes.attribute(config.attribute)
    if len(config.values) < 2:
        raise UserInputError(f"--values: give at least two values of {config.attribute} to "
                             f"compare, got {', '.join(map(str, config.values))}")
    if config.reference_value not in config.values:
        raise UserInputError(f"--reference: {config.reference!r} is not one of --values "
                             f"({', '.join(map(str, config.values))})")
    if not config.seeds or any(s < 0 for s in config.seeds) or len(set(config.seeds)) < len(
            config.seeds):
        raise UserInputError(f"--seeds: {list(config.seeds)} must be distinct integers >= 0")
    generator.check(cohort, config.attribute)
    for subject in cohort:  # every mask is read and checked before anything is written
        read_labels(subject.mask, config.labels)


def noise_seed(subject_id: str, seed: int) -> int:
    """The noise seed of one subject at one sweep seed: distinct subjects get independent noise,
    so seed-to-seed differences (the noise floor) are independent across subjects."""
    digest = hashlib.sha256(f"{subject_id}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _plan(config: SweepConfig, cohort: Cohort, template: PromptTemplate) -> list[_Group]:
    groups = []
    for subject in cohort:
        requests = []
        for value in config.values:
            record = edit(subject.record, config.attribute, value, config.attributes)
            requests.append(Request(value, record, template.render(record)))
        groups += [_Group(subject, seed, tuple(requests)) for seed in config.seeds]
    return groups


def _settings(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator) -> dict:
    """The settings a resumed run must share with the run it continues."""
    return {"attribute": config.attribute, "values": list(config.values),
            "reference": config.reference_value, "seeds": list(config.seeds),
            "cohort": str(cohort.source.resolve()), "subjects": [s.id for s in cohort],
            "model": generator.name, "model_hash": generator.content_hash}


def _open_run(config: SweepConfig, settings: dict) -> dict:
    """Return the files already recorded as done (path -> sha256); refuse unsafe reuse."""
    out = config.out
    if not out.exists() or not any(p for p in out.iterdir() if p.name != ".cfx.lock"):
        return {}
    if not config.resume:
        raise UserInputError(f"{out}: folder exists and is not empty; add --resume to continue "
                             "that run or choose another --out")
    manifest = read_manifest(out)
    check_same_settings(out, manifest.get("settings", {}), settings)
    return {entry["path"]: entry["sha256"] for entry in manifest.get("files", [])
            if entry.get("status") == "done"}


def _intact(out: Path, relative: str, done: dict) -> bool:
    path = out / relative
    return relative in done and path.exists() and sha256(path) == done[relative]


def run_sweep(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator,
              template: PromptTemplate | None = None) -> SweepResult:
    """Generate every subject × value × seed of ``cohort`` with ``generator`` into ``config.out``.

    Returns
    -------
    SweepResult
    """
    # 1. Check inputs: nothing is written before every input is known to be good.
    template = template or DEFAULT_TEMPLATE
    _check_inputs(config, cohort, generator)
    # 2. Plan: one group per subject and seed, one request per value.
    groups = _plan(config, cohort, template)
    labels = value_labels(config.values)
    label_of = dict(zip(config.values, labels, strict=True))
    reference = config.reference_value
    settings = _settings(config, cohort, generator)
    done = _open_run(config, settings)
    start = time.perf_counter()
    generated = reused = 0
    with run_lock(config.out):
        # 3. Describe the run before generating anything.
        write_json(config.out / "dataset_description.json", dataset_description(
            f"cfx sweep of {config.attribute}", __version__, generator.name, str(cohort.source)))
        manifest = {
            "cfx_version": __version__,
            "command": list(config.command),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": settings,
            "model": {"name": generator.name, "content_hash": generator.content_hash,
                      "text_encoder": generator.text_encoder},
            "prompt_template": {"name": template.name, "sha256": template.sha256},
            "versions": package_versions(),
            "masks": {s.id: str(s.mask.resolve()) for s in cohort},
            "subjects_without_attribute": [s.id for s in cohort
                                           if config.attribute not in s.record],
            "items": [{"subject": g.subject.id, "seed": g.seed,
                       "noise_seed": noise_seed(g.subject.id, g.seed), "value": r.value,
                       "prompt": r.prompt,
                       "path": ct_name(g.subject.id, config.attribute, label_of[r.value], g.seed)}
                      for g in groups for r in g.requests],
            "files": [],
        }
        files: dict[str, dict] = {}

        def record(relative: str, kind: str) -> None:
            files[relative] = {"path": relative, "kind": kind, "status": "done",
                               "sha256": sha256(config.out / relative)}

        # 4. Generate group by group; a group whose files are intact is not generated again.
        for group in track(groups, f"sweep {config.attribute}", quiet=config.quiet):
            sid = group.subject.id
            cts = {r.value: ct_name(sid, config.attribute, label_of[r.value], group.seed)
                   for r in group.requests}
            diffs = {v: diff_name(sid, config.attribute, label_of[v], label_of[reference],
                                  group.seed) for v in config.values if v != reference}
            wanted = list(cts.values()) + list(diffs.values())
            if all(_intact(config.out, rel, done) for rel in wanted):
                reused += len(cts)
                for rel in cts.values():
                    record(rel, "ct")
                for rel in diffs.values():
                    record(rel, "diff")
                continue
            mask = read_labels(group.subject.mask, config.labels)
            volumes = generator.generate(group.subject, mask, config.attribute, group.requests,
                                         noise_seed(sid, group.seed))
            # 5. Write CTs with the mask's affine, then the difference maps against the reference.
            by_value = dict(zip(config.values, volumes, strict=True))
            for value, rel in cts.items():
                if not _intact(config.out, rel, done):
                    write_volume(config.out / rel, np.asarray(by_value[value], np.float32),
                                 mask.affine)
                record(rel, "ct")
            for value, rel in diffs.items():
                if not _intact(config.out, rel, done):
                    delta = np.asarray(by_value[value], np.float32) - by_value[reference]
                    write_volume(config.out / rel, delta.astype(np.float32), mask.affine)
                record(rel, "diff")
            generated += len(cts)
            manifest["files"] = list(files.values())
            write_json(config.out / MANIFEST, manifest)
        manifest["files"] = list(files.values())
        manifest["complete"] = True
        write_json(config.out / MANIFEST, manifest)
    seconds = time.perf_counter() - start
    if not config.quiet and manifest["subjects_without_attribute"]:
        console.print(f"note: {len(manifest['subjects_without_attribute'])} subjects had no "
                      f"{config.attribute} in their record; the sweep set it (see manifest.json)")
    return SweepResult(config.out, len(manifest["items"]), generated, reused, seconds,
                       seconds / max(generated, 1), [config.out / f for f in files])
