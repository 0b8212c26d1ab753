"""``cfx train``: train the mask + text conditional GAN (``--arch gan``) or diffusion model
(``--arch diffusion``) on a cohort or on phantom subjects.

``--cohort DIR`` reads a cohort with CTs and trains on lung-centred patches; ``--cohort
phantom`` draws a new phantom subject for every training sample (an unlimited cohort), and
``--cohort phantom:N`` fixes ``N`` phantom subjects with one CT each. The checkpoint folder is
saved every ``--save-every`` steps and at the end, with what ``--resume`` needs to continue
exactly where it stopped. A cohort folder is resampled onto the training grid once, cached
on disk (``--cache``) and streamed by ``--workers`` processes; ``--ddp`` trains with several
processes launched by ``torchrun``. A diverged step (non-finite or spiking loss or gradient norm) is
rolled back to the last good state and training goes on at half the learning rate, up to three
times, then the run stops with one line naming the step; only states confirmed good are saved,
and the output, ``config.json`` (``training.steps``, ``training.guard``) and the model card say
which step the saved model is from. The training code (torch, MONAI) is imported only when it
runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cfx.counterfactual.atomic import check_writable, claim_new
from cfx.counterfactual.cli.app import app
from cfx.counterfactual.cli.params import at_least, choice, device_option, quiet_option
from cfx.models.architectures import ARCHITECTURES


def _fusion(value: str | None) -> str | None:
    from cfx.models.nets.cond_gan3d import FUSIONS

    return choice(FUSIONS)(value)


@app.command()
def train(
    cohort: str = typer.Option(None, "--cohort", metavar="DIR|phantom|phantom:N",
                               help="Cohort folder with CTs; 'phantom' for a new phantom "
                                    "subject per draw; 'phantom:N' for N fixed ones (not "
                                    "needed with --resume)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    arch: str = typer.Option("gan", "--arch", callback=choice(tuple(ARCHITECTURES)),
                             help="Architecture: gan (mask + text conditional 3D GAN) or "
                                  "diffusion (mask + text conditional 3D diffusion model)."),
    steps: int = typer.Option(2000, "--steps", callback=at_least(1),
                              help="Total training steps (with --resume: the new total)."),
    patch: str = typer.Option("32,32,32", "--patch", help="Training patch X,Y,Z in voxels."),
    batch_size: int = typer.Option(4, "--batch-size", callback=at_least(1)),
    text_encoder: str = typer.Option("minilm", "--text-encoder", metavar="NAME|PATH",
                                     help="'minilm' (bundled) or a local model folder."),
    fusion: str = typer.Option(None, "--fusion", callback=_fusion, show_default=False,
                               help="GAN: how text enters, affine (FiLM) or cross-attention "
                                    "(default: affine)."),
    channels: str = typer.Option(None, "--channels", show_default=False,
                                 help="Network channels per level, finest first (default: gan "
                                      "16,32,64,64; diffusion 16,32,32, multiples of 8)."),
    phantom_shape: str = typer.Option("64,64,64", "--phantom-shape",
                                      help="Grid of phantom subjects (field of view 320 mm)."),
    drop_rate: float = typer.Option(0.2, "--drop-rate", help="Chance of dropping each prompt "
                                    "field per draw."),
    lr: float = typer.Option(None, "--lr", show_default=False,
                             help="Learning rate (default: gan 5e-4, Adam, both networks; "
                                  "diffusion 2e-4, AdamW); halved at each rollback after a "
                                  "divergence, at most 3 times."),
    fusion_lr_scale: float = typer.Option(None, "--fusion-lr-scale", show_default=False,
                                          help="Text layers (GAN: fusion; diffusion: "
                                               "cross-attention and FiLM) learn this many "
                                               "times faster than the rest (default: 1)."),
    l1_weight: float = typer.Option(None, "--l1-weight", show_default=False,
                                    help="Weight of the L1 loss, in window units (new run: 100; "
                                         "resume: as saved)."),
    adversarial_weight: float = typer.Option(None, "--adversarial-weight", show_default=False,
                                             help="Weight of the adversarial loss; 0 trains on "
                                                  "L1 alone (new run: 1; resume: as saved)."),
    p_uncond: float = typer.Option(None, "--p-uncond", show_default=False,
                                   help="Diffusion: chance of training a row without any "
                                        "record, for classifier-free guidance (default: 0.1)."),
    sampling_steps: int = typer.Option(None, "--sampling-steps", callback=at_least(1),
                                       show_default=False,
                                       help="Diffusion: DDIM steps the sweep uses by default "
                                            "(default: 20)."),
    body: bool = typer.Option(None, "--body/--no-body", show_default=False,
                              help="Give the generator the body outline (from each training "
                                   "CT; at sweep time from the subject's CT, or drawn around "
                                   "the lungs) as one more label channel (new run: on; "
                                   "resume: as saved)."),
    region_weight: float = typer.Option(None, "--region-weight", show_default=False,
                                        help="GAN: weight of the regional-mean loss, the "
                                             "difference of each label's mean HU between a "
                                             "draw and its CT; 0 leaves it out (new run: 100; "
                                             "resume: as saved)."),
    edit_weight: float = typer.Option(None, "--edit-weight", show_default=False,
                                      help="Weight of the minimal-edit loss, the L1 change "
                                           "between one draw (GAN) or one clean-image "
                                           "estimate (diffusion) read with two records; 0 "
                                           "leaves it out (new run: GAN 20, diffusion 0.01; "
                                           "resume: as saved)."),
    gate_decay: float = typer.Option(None, "--gate-decay", show_default=False,
                                     help="GAN: gate the record's reach by anatomy, a learned "
                                          "weight per label that shrinks by this many times "
                                          "the learning rate each step unless the data hold it "
                                          "open (default: 0, no gate)."),
    label_levels: bool = typer.Option(None, "--label-levels/--no-label-levels",
                                      show_default=False,
                                      help="The record sets each label's mean HU on its "
                                           "own linear path, added where the label is (the "
                                           "diffusion model draws the rest) (new run: on; "
                                           "resume: as saved)."),
    level_rows: int = typer.Option(None, "--level-rows", callback=at_least(1),
                                   show_default=False,
                                   help="With label levels: whole training subjects the "
                                        "levels are fitted on, once, before the first "
                                        "step, by least squares; a fixed cohort in as many "
                                        "passes as this holds (one at least), every "
                                        "subject equally often (new run: 1024)."),
    film_decay: float = typer.Option(None, "--film-decay", show_default=False,
                                     help="GAN: the FiLM's weights on the record shrink by "
                                          "this many times the learning rate each step, so a "
                                          "label's mean moves through its level alone "
                                          "(new run: 2 with affine fusion; 0 is off; resume: "
                                          "as saved)."),
    workers: int = typer.Option(2, "--workers", callback=at_least(0),
                                help="Processes reading a cohort's training patches from its "
                                     "disk cache (0: read in the training process)."),
    cache: Path = typer.Option(None, "--cache", show_default=False,
                               help="Folder of a cohort's subjects prepared on the training grid "
                                    "(default: $XDG_CACHE_HOME/cfx/training)."),
    ddp: bool = typer.Option(False, "--ddp", help="One process of a torchrun launch: "
                             "torchrun --nproc-per-node N --no-python cfx train --ddp ...; "
                             "--batch-size is the global batch, split over the processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of data, noise and initial weights."),
    save_every: int = typer.Option(250, "--save-every", callback=at_least(1)),
    log_every: int = typer.Option(50, "--log-every", callback=at_least(1)),
    device: str = device_option(),
    resume: bool = typer.Option(False, "--resume", metavar="",
                                help="Continue the run saved in --out."),
    quiet: bool = quiet_option("No progress output."),
) -> None:
    """Train the mask + text conditional GAN or diffusion model and save a checkpoint folder
    (no pickle)."""
    options = dict(locals())
    check_writable(out, "--out")
    claim_new(out)  # a failed first run removes the checkpoint folder whole
    from cfx.counterfactual.training import run_training

    run_training(**options)
