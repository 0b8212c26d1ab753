"""Model cards of ``cfx train`` checkpoints: what every card shares (title, intended use, how
it was trained, which step was saved), with the architecture's own description, loss bullet and
closing sections (its ``card``, :mod:`cfx.models.architectures`)."""

from __future__ import annotations

from types import ModuleType

__all__ = ["model_card", "GPU_RECIPE"]

GPU_RECIPE = """
## Training on real chest CT (GPU recipe)
Not run here: no GPU was available to the developers, so every GPU figure below is an
**estimate**; the CPU figures are **measured** (`benchmarks/training_memory.py`).
- data: masks + CTs as a cohort folder; `cfx train` resamples each subject once onto the
  cohort's median spacing and caches it (`--cache`, about 5 bytes per voxel: a 512x512x300 CT
  at 0.7 x 0.7 x 1 mm is ~390 MB, 500 of them ~200 GB of disk; resample the cohort to
  1.5 mm first to cut that ~10x and see the chest in a 128^3 patch)
- GAN: `--patch 128,128,128 --batch-size 8 --channels 16,32,64,64 --steps 50000 --workers 6`;
  estimated ~0.25 s/step on one 80 GB-class GPU with bf16 autocast (from the CPU fwd+bwd cost of
  0.38 s at 64^3 and ~100x CPU-to-GPU), i.e. ~3.5 h, and 20-30 GB of GPU memory
- diffusion: `--arch diffusion --patch 96,96,96 --batch-size 8 --steps 100000`; estimated
  ~0.5 s/step, ~14 h, 40-60 GB
- several GPUs: `torchrun --nproc-per-node N --no-python cfx train --ddp ...` with the global
  `--batch-size` a multiple of N (measured on CPU with 2 gloo processes: equal to one process
  on the whole batch to 1e-5, except through the GAN discriminator's BatchNorm, which is
  SyncBatchNorm on CUDA); time per step falls ~N-fold (estimate)
- host memory (measured on CPU, streamed): see `benchmarks/training_memory.py`; it does not
  grow with the number of subjects
"""


def model_card(config: dict, architecture: ModuleType) -> str:
    """The Markdown card of a checkpoint whose ``config.json`` is ``config``, written by the
    implementation module ``architecture``."""
    what, loss, tail = architecture.card(config, config["generator"])
    return _card_head(config, what, loss) + tail + GPU_RECIPE


def _card_head(config: dict, what: str, loss: str = "") -> str:
    """Title, description, intended use and how it was trained: what every model card shares
    (``loss``: an extra training bullet, ending in a newline)."""
    training = config["training"]
    arguments = training["arguments"]
    minutes = training["elapsed_s"] / 60
    return f"""# {config["name"]}

{what}

## Intended use
Research and demonstration of counterfactual attribute analysis with cfx. **Not for diagnosis
or any clinical decision.** Trained on {_trained_on(config["training_cohort"])}; what it draws
for real scans says nothing about real patients.

## How it was trained
- command: `{training["command"]}`
- steps: {training["steps"]} (batch {arguments["batch_size"]}, patch
  {"x".join(map(str, arguments["patch"]))} voxels), wall time {minutes:.1f} min on
  {training["device"]}{_processes(training)}
{loss}- text encoder: `{config["text_encoder"]["name"]}` ({config["text_encoder"]["width"]}-d),
  reading each field of the record written alone by the prompt template, its pooled
  embedding centred and PCA-whitened per field, a numeric one read out as its value by ridge
  regression: {_fields_line(config)}
- intensities: fixed window {config["hu_window"][0]:g}..{config["hu_window"][1]:g} HU
  (outputs are clipped to it)
- saved model: {_saved_line(training)}
- cfx {config["cfx_version"]}
"""


def _processes(training: dict) -> str:
    count = training.get("processes", 1)
    return f" x {count} data-parallel processes" if count > 1 else ""


def _saved_line(training: dict) -> str:
    """Which step the served weights are from, and what the divergence guard did."""
    guard = training["guard"]
    line = (f"the EMA weights of step {training['steps']}, confirmed good by the next step's "
            f"loss; gradients clipped to norm {guard['clip_norm']:g}; divergence: "
            f"{guard['rule']}")
    events = [f"step {r['step']} ({r['reason']}) rolled back to step {r['to_step']}, learning "
              f"rate x{r['lr_scale']:g}" for r in guard["rollbacks"]]
    line += "; " + ("; ".join(events) if events else "no rollback")
    if "stopped" in guard:
        line += f"; stopped: {guard['stopped']}"
    return line


def _fields_line(config: dict) -> str:
    units = {name: spec.get("unit", "") for name, spec
             in config.get("attributes", {}).get("attributes", {}).items()}
    return ", ".join(_field_line(name, f, units.get(name, ""))
                     for name, f in config["text_normalisation"]["fields"].items())


def _field_line(name: str, field: dict, unit: str) -> str:
    if "readout" not in field:
        return f"{name} {field['dims']} dims ({100 * field['explained']:.0f} % of " \
               f"{field['phrases']} phrases)"
    readout = field["readout"]
    low, high = readout["values"]
    return (f"{name} read out ({field['phrases']} phrases of {low:g}-{high:g}, R² "
            f"{readout['r2']:.2f}, leave-one-out error {readout['loo_rmse']:.1f} {unit})"
            .replace(" )", ")"))


def _trained_on(summary: dict) -> str:
    if summary["kind"] == "phantom":
        count = summary["subjects"]
        count = "a new one per draw" if isinstance(count, str) else f"{count} of them"
        return (f"synthetic phantom subjects ({count}, {'x'.join(map(str, summary['shape']))} "
                f"voxels of {summary['spacing'][0]:g} mm)")
    return f"the cohort {summary['source']} ({summary['subjects']} subjects)"
