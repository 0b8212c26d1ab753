"""The sweep: every subject × value × seed, generated in pairs that share their noise.

``run_sweep`` reads as a numbered recipe: check inputs, plan the groups (one per subject and
seed), take this shard's slice, open (or resume, or join) the run folder under its lock, generate
the missing groups with an executor, keep the manifest current, and merge the shards' records.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cfx.counterfactual import __version__
from cfx.counterfactual.attributes import (
    DEFAULT_ATTRIBUTES,
    AttributeVocabulary,
    canonicalize_record,
    edit,
)
from cfx.counterfactual.cohort import Cohort, Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.grid import GRID_MODES, grid_warnings, plan_grid
from cfx.counterfactual.labels import DEFAULT_VOCABULARY, LabelVocabulary
from cfx.counterfactual.progress import console, track
from cfx.counterfactual.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfx.counterfactual.sweep.executors import (
    DEVICES,
    GroupJob,
    LocalExecutor,
    RayExecutor,
    Work,
    resolve_device,
)
from cfx.counterfactual.sweep.generators import CounterfactualGenerator, Request
from cfx.counterfactual.sweep.lock import merge_lock, run_lock, shard_lock
from cfx.counterfactual.sweep.manifest import (
    MANIFEST,
    check_same_inputs,
    check_same_settings,
    dataset_description,
    input_hashes,
    package_versions,
    read_manifest,
    recorded_files,
    sha256,
    shard_manifest_name,
    shard_manifests,
    write_json,
)
from cfx.counterfactual.sweep.naming import ct_name, diff_name, value_labels
from cfx.counterfactual.sweep.projection import projected_seconds, projection_lines
from cfx.counterfactual.vocabularies import Vocabularies
from cfx.counterfactual.volume import read_labels

__all__ = ["SweepConfig", "SweepResult", "run_sweep", "noise_seed", "shard_slice"]

# The manifest lists every item, so rewriting it after every group would cost O(items²) over a
# run; a kill loses at most this many seconds of records (those groups are generated again).
_SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep. ``values`` are canonical; ``reference`` is one of them.

    ``shard`` ``(i, n)`` runs the ``i``-th of ``n`` contiguous slices of the (subject, seed)
    groups, ``1 <= i <= n``; ``batch_size`` and ``device`` (``auto``, ``cpu``, ``cuda``) reach
    generators that have a ``configure`` method. ``grid`` (``subject`` or ``model``) says where
    a model that records its training grid writes: resampled back onto each subject's grid, or
    on the model's grid (:mod:`cfx.counterfactual.grid`).
    """

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
    shard: tuple[int, int] | None = None
    batch_size: int = 1
    device: str = "auto"
    grid: str = "subject"

    @property
    def reference_value(self):
        return self.values[0] if self.reference is None else self.reference


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did. ``items`` counts this shard's items; ``complete`` says whether the whole
    run (every shard) is done."""

    out: Path
    items: int
    generated: int
    reused: int
    seconds: float
    seconds_per_volume: float
    files: list[Path] = field(default_factory=list)
    complete: bool = True


@dataclass(frozen=True)
class _Group:
    """One subject and seed: all values generated together from one noise draw."""

    subject: Subject
    seed: int
    requests: tuple[Request, ...]
    cts: tuple[str, ...]
    diffs: tuple[tuple[int, str], ...]

    @property
    def paths(self) -> list[str]:
        return [*self.cts, *(rel for _, rel in self.diffs)]


def _check_inputs(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator,
                  executor) -> None:
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
    if config.shard is not None:
        index, count = config.shard
        if not 1 <= index <= count:
            raise UserInputError(f"--shard: {index}/{count} is out of range; give i/n with "
                                 "1 <= i <= n, e.g. 1/4")
    if config.batch_size < 1:
        raise UserInputError(f"--batch-size: got {config.batch_size}; give an integer >= 1")
    if config.device not in DEVICES:
        raise UserInputError(f"--device: {config.device!r} is not one of {', '.join(DEVICES)}")
    if config.grid not in GRID_MODES:
        raise UserInputError(f"--grid: {config.grid!r} is not one of {', '.join(GRID_MODES)}")
    executor.check(config.device)
    generator.check(cohort, config.attribute)
    lung = "lung" in config.labels.region_names
    for subject in cohort:  # every mask is read and checked before anything is written
        mask = read_labels(subject.mask, config.labels)
        if lung:  # a sweep's effects are measured in the lungs: a mask without them is an error
            config.labels.region_mask(mask.data, "lung", mask.source)
        elif not mask.data.any():
            raise UserInputError(f"{mask.source}: the mask has no labelled voxel; check it")


def noise_seed(subject_id: str, seed: int) -> int:
    """The noise seed of one subject at one sweep seed: distinct subjects get independent noise,
    so seed-to-seed differences (the noise floor) are independent across subjects."""
    digest = hashlib.sha256(f"{subject_id}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shard_slice(n_groups: int, index: int, count: int) -> range:
    """Group indices of shard ``index`` of ``count`` (from 1): contiguous, sizes differ by at most
    one, and the shards together cover every group exactly once."""
    return range(n_groups * (index - 1) // count, n_groups * index // count)


def _model_folder(generator) -> dict:
    """``{"folder": absolute path}`` for a checkpoint model (so ``cfx audit`` finds it again),
    else nothing."""
    folder = getattr(generator, "folder", None)
    return {} if folder is None else {"folder": str(Path(folder).resolve())}


def _plan(config: SweepConfig, cohort: Cohort, template: PromptTemplate) -> list[_Group]:
    labels = dict(zip(config.values, value_labels(config.values), strict=True))
    reference = config.values.index(config.reference_value)
    groups = []
    table = cohort.source / "clinical.csv" if cohort.source.is_dir() else cohort.source
    for subject in cohort:
        # Every record value must be one the vocabulary knows (as cfx prompts requires), so no
        # prompt carries a value no model was trained on; values are written canonically.
        record = canonicalize_record(subject.record, config.attributes,
                                     f"{table}, subject {subject.id}")
        requests = []
        for value in config.values:
            edited = edit(record, config.attribute, value, config.attributes)
            requests.append(Request.build(value, edited, template, source=record))
        for seed in config.seeds:
            cts = tuple(ct_name(subject.id, config.attribute, labels[v], seed)
                        for v in config.values)
            diffs = tuple((k, diff_name(subject.id, config.attribute, labels[v],
                                        labels[config.values[reference]], seed))
                          for k, v in enumerate(config.values) if k != reference)
            groups.append(_Group(subject, seed, tuple(requests), cts, diffs))
    return groups


def _settings(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator) -> dict:
    """The settings a resumed run (or another shard) must share with the run it continues,
    with how the model samples where it says (diffusion: steps, guidance, from-CT strength)."""
    settings = {"attribute": config.attribute, "values": list(config.values),
                "reference": config.reference_value, "seeds": list(config.seeds),
                "cohort": str(cohort.source.resolve()), "subjects": [s.id for s in cohort],
                "model": generator.name, "model_hash": generator.content_hash}
    sampling = getattr(generator, "sampling", None)
    if sampling is not None:
        settings["sampling"] = sampling
    return settings


def _inputs(config: SweepConfig, cohort: Cohort) -> tuple[dict, dict]:
    """Each subject's input hashes (mask, CT, canonical record) and where each input is."""
    table = cohort.source / "clinical.csv" if cohort.source.is_dir() else cohort.source
    hashes, sources = {}, {}
    for subject in cohort:
        where = f"{table}, subject {subject.id}"
        record = canonicalize_record(subject.record, config.attributes, where)
        hashes[subject.id] = input_hashes(subject.mask, subject.ct, record)
        sources[subject.id] = {"mask": str(subject.mask), "ct": str(subject.ct), "record": where}
    return hashes, sources


def _started(out: Path) -> bool:
    """True when ``out`` holds anything but lock and temporary files (which start with a dot)."""
    return out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())


def _check_folder(config: SweepConfig, settings: dict, inputs: tuple[dict, dict]) -> None:
    """Refuse unsafe reuse of ``config.out``: a started folder needs ``--resume`` (a shard joins
    it without), the same settings and the same inputs (masks, CTs, records)."""
    out = config.out
    if not _started(out):
        return
    if config.shard is None and not config.resume:
        raise UserInputError(f"{out}: folder exists and is not empty; add --resume to continue "
                             "that run or choose another --out")
    manifest = read_manifest(out)
    check_same_settings(out, manifest.get("settings", {}), settings)
    check_same_inputs(out, manifest.get("inputs"), *inputs)


def _remove_stale_parts(out: Path, paths) -> None:
    """Delete temporary files a killed write of ``paths`` left behind (``.<name>.*.part*``)."""
    for rel in paths:
        target = out / rel
        if target.parent.is_dir():
            for stale in target.parent.glob(f".{target.name}.*.part*"):
                stale.unlink(missing_ok=True)


def _intact(out: Path, relative: str, done: dict) -> bool:
    path = out / relative
    return relative in done and path.exists() and sha256(path) == done[relative]["sha256"]


def _entry(relative: str, kind: str, digest: str) -> dict:
    return {"path": relative, "kind": kind, "status": "done", "sha256": digest}


def run_sweep(config: SweepConfig, cohort: Cohort, generator: CounterfactualGenerator,
              template: PromptTemplate | None = None,
              executor: LocalExecutor | RayExecutor | None = None) -> SweepResult:
    """Generate every subject × value × seed of ``cohort`` with ``generator`` into ``config.out``.

    Parameters
    ----------
    config : SweepConfig
    cohort : Cohort
    generator : CounterfactualGenerator
    template : PromptTemplate, optional
        Default :data:`cfx.counterfactual.prompts.DEFAULT_TEMPLATE`.
    executor : LocalExecutor or RayExecutor, optional
        Where groups run; default in this process.

    Returns
    -------
    SweepResult

    Raises
    ------
    UserInputError
        Bad settings, a mask outside the label vocabulary, a model that refuses the cohort, a
        started folder without ``--resume``, with other settings or with a subject whose
        mask, CT or record is not the one it recorded, a folder another sweep
        holds: all before anything is generated.

    Notes
    -----
    With ``config.shard = (i, n)`` this process runs groups ``shard_slice(len(groups), i, n)``
    and joins the run folder without ``resume`` (same settings required). It records its files
    in ``manifest.shard-i-of-n.json``; on finishing, it merges every shard's records into
    ``manifest.json``, which says ``"complete": true`` once all planned files are recorded.
    Shards of one run may run one after another or at once; files are a pure function of the
    settings, so any mix of shards, resumes and executors gives the same bytes.
    """
    # 1. Check inputs: nothing is written before every input is known to be good.
    template = template or DEFAULT_TEMPLATE
    executor = executor or LocalExecutor()
    _check_inputs(config, cohort, generator, executor)
    # 1b. Fit the cohort to the model's training grid (models that record one): say before any
    #     work when a subject is resampled over 4x or is larger than the model's field of view;
    #     with --grid model the jobs read masks (and CTs) written on the model grid.
    fitting = plan_grid(generator, cohort, config.grid, config.labels, config.out)
    jobs_cohort = cohort
    if fitting is not None:
        for line in grid_warnings(fitting):
            console.print(line, soft_wrap=True)
        generator, jobs_cohort = fitting.generator, fitting.cohort
    # 2. Plan: one group per subject and seed, one request per value; take this shard's slice.
    groups = _plan(config, jobs_cohort, template)
    kinds = {rel: "ct" for g in groups for rel in g.cts}
    kinds.update({rel: "diff" for g in groups for _, rel in g.diffs})
    planned = [rel for g in groups for rel in g.paths]
    mine = groups if config.shard is None else [
        groups[k] for k in shard_slice(len(groups), *config.shard)]
    settings = _settings(config, cohort, generator)
    if fitting is not None:
        settings["grid"] = fitting.settings()
    inputs = _inputs(config, cohort)  # what each subject's outputs are made from
    _check_folder(config, settings, inputs)
    out = config.out
    base = {
        "cfx_version": __version__,
        "command": list(config.command),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "model": {"name": generator.name, "content_hash": generator.content_hash,
                  "text_encoder": generator.text_encoder, **_model_folder(generator)},
        **Vocabularies(config.attributes, config.labels, template).to_json(),
        "versions": package_versions(),
        "masks": {s.id: str(s.mask.resolve()) for s in jobs_cohort},
        "inputs": inputs[0],
        "subjects_without_attribute": [s.id for s in cohort if config.attribute not in s.record],
        "items": [{"subject": g.subject.id, "seed": g.seed,
                   "noise_seed": noise_seed(g.subject.id, g.seed), "value": r.value,
                   "prompt": r.prompt, "path": rel}
                  for g in groups for r, rel in zip(g.requests, g.cts, strict=True)],
    }
    if fitting is not None:
        base["grid"] = fitting.manifest(out.resolve())
    files: dict[str, dict] = {}

    def ordered(entries: dict) -> list[dict]:
        return [entries[rel] for rel in planned if rel in entries]

    last_save = 0.0

    def save(complete: bool = False, every: float = 0.0) -> None:
        """Write this process's manifest, unless one was written less than ``every`` s ago."""
        nonlocal last_save
        if time.perf_counter() - last_save < every:
            return
        last_save = time.perf_counter()
        if config.shard is None:
            write_json(out / MANIFEST, {**base, "files": ordered(files), "complete": complete,
                                        "shards": []})
            return
        index, count = config.shard
        write_json(out / shard_manifest_name(index, count), {
            "shard": f"{index}/{count}", "cfx_version": __version__,
            "command": list(config.command), "created": base["created"], "settings": settings,
            "groups": [[g.subject.id, g.seed] for g in mine], "files": ordered(files),
            "complete": complete})

    lock = run_lock(out) if config.shard is None else shard_lock(out, *config.shard)
    start = time.perf_counter()
    generated = reused = 0
    with lock:
        # 3. Open the run under the manifest lock: re-check (another shard may have started
        #    it meanwhile), learn what is recorded as done, describe the run.
        with merge_lock(out):
            _check_folder(config, settings, inputs)
            done = recorded_files(out) if _started(out) else {}
            if config.shard is None or not (out / MANIFEST).exists():
                write_json(out / MANIFEST, {**base, "files": ordered(done), "complete": False,
                                            "shards": []})
            write_json(out / "dataset_description.json", dataset_description(
                f"cfx sweep of {config.attribute}", __version__, generator.name,
                str(cohort.source)))
            if fitting is not None and fitting.mode == "model":
                fitting.write_model_grid(cohort, config.labels)
        # 4. Keep intact files (checksums match the records); plan the groups to generate.
        jobs = []
        for group in mine:
            intact = [rel for rel in group.paths if _intact(out, rel, done)]
            files.update((rel, done[rel]) for rel in intact)
            if len(intact) == len(group.paths):
                reused += len(group.cts)
                continue
            jobs.append(GroupJob(group.subject, noise_seed(group.subject.id, group.seed),
                                 group.requests, group.cts, group.diffs,
                                 config.values.index(config.reference_value),
                                 frozenset(group.paths) - frozenset(intact)))
        _remove_stale_parts(out, [rel for job in jobs for rel in job.write])
        save()
        # 4b. Say how long it will take, when over a minute (learned models on the CPU).
        if fitting is not None and jobs and resolve_device(config.device) == "cpu":
            for line in projection_lines(projected_seconds(fitting, jobs), len(jobs), "cpu"):
                console.print(line, soft_wrap=True)
        # 5. Generate: the executor writes CTs and difference maps with the mask's affine and
        #    returns their checksums; the manifest records them at least every _SAVE_EVERY_S.
        work = Work(out, config.attribute, config.labels, config.device, config.batch_size)
        for job, written in track(executor.run(generator, jobs, work),
                                  f"sweep {config.attribute}", total=len(jobs),
                                  quiet=config.quiet):
            files.update((rel, _entry(rel, kinds[rel], digest)) for rel, digest in written.items())
            generated += len(job.cts)
            save(every=_SAVE_EVERY_S)
        # 6. Finish: merge every shard's records into manifest.json.
        with merge_lock(out):
            save(complete=True)
            merged = {**recorded_files(out), **files}
            complete = all(rel in merged for rel in planned)
            manifest = base if config.shard is None else read_manifest(out)
            write_json(out / MANIFEST, {**manifest, "files": ordered(merged),
                                        "complete": complete,
                                        "shards": [p.name for p in shard_manifests(out)]})
    seconds = time.perf_counter() - start
    if not config.quiet and base["subjects_without_attribute"]:
        console.print(f"note: {len(base['subjects_without_attribute'])} subjects had no "
                      f"{config.attribute} in their record; the sweep set it (see manifest.json)")
    return SweepResult(out, sum(len(g.cts) for g in mine), generated, reused, seconds,
                       seconds / max(generated, 1), [out / f for f in files], complete)
