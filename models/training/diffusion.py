"""Noise-prediction (DDPM) training of :class:`cfx.models.nets.cond_diffusion3d.CondDiffusion3D`.

The loop mirrors :mod:`cfx.models.training.gan`: a batch source (``(numpy Generator, batch_size) ->
TrainingBatch``) hands it label maps, CTs in HU and each row's record as per-field phrases (the
source has already dropped each field with its drop rate), and a frozen text encoder embeds the
phrases. Everything random in a step comes from two generators the trainer owns (numpy for the
data, torch for timesteps, noise and condition dropout); their states are part of
:meth:`DiffusionTrainer.training_state`, so a resumed run continues exactly as if it had not
stopped.

Per step: each row gets a timestep ``t`` uniform in ``[0, T)`` and standard normal noise ``n``;
MONAI's ``DDPMScheduler`` noises the CT (window units) to ``x_t``; with probability
``p_uncond`` the row's whole record is replaced by the record with every field missing (what
classifier-free guidance reads as unconditional); the network predicts, from ``x_t``, the label
map, ``t`` and the record, the velocity ``v = sqrt(abar_t) n - sqrt(1 - abar_t) x_0`` (or ``n``,
as the model's ``prediction`` says), and the loss is the mean squared error. With
``edit_weight > 0`` the network also predicts each row from the same ``x_t`` under the previous
row's record, and the mean absolute difference of the two clean-image estimates ``x_0`` (window
units) is added with that weight: a minimal-edit term like the GAN's (see
:class:`DiffusionSettings`). With label levels
(``CondDiffusion3D(label_levels=True)``) what is noised and predicted is the residual, the CT
minus the level map of the row's (dropped) record; a new run fits the levels once, in closed
form, before the first step (:meth:`DiffusionTrainer.fit_levels`,
:mod:`cfx.models.training.levels`), and they stay fixed, so the network learns a residual that
does not move under it. An exponential
moving average (EMA) of the weights is what a checkpoint serves; its decay at step ``k`` is
``min(ema_decay, (1 + k) / (10 + k))``, so early steps are not averaged with the initial weights
for thousands of steps.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.networks.schedulers import DDPMScheduler
from torch.nn import functional as F

from cfx.models.nets.cond_diffusion3d import CondDiffusion3D
from cfx.models.text.cache import RecordConditions
from cfx.models.text.interface import TextEncoder
from cfx.models.training.distributed import (
    ShardedSource,
    average_values,
    data_parallel,
    shard_rows,
)
from cfx.models.training.gan import BatchSource, batch_tensors
from cfx.models.training.levels import LEVEL_ROWS, fit_levels, level_draw
from cfx.models.training.state import (
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_tensors,
    rng_json,
)

__all__ = ["DiffusionSettings", "DiffusionTrainer"]


@dataclass(frozen=True)
class DiffusionSettings:
    """Optimisation settings (the checkpoint's ``training`` config records them).

    Attributes
    ----------
    batch_size : int
    lr : float
        AdamW learning rate.
    fusion_lr_scale : float
        The layers that read the record (the FiLM maps and the cross-attention) learn at
        ``fusion_lr_scale * lr``.
    p_uncond : float
        Chance of training a row on the record with every field missing (classifier-free
        guidance), on top of the source's per-field dropping.
    edit_weight : float
        Weight of the minimal-edit loss, the mean absolute change of the ``x_0`` estimate
        (window units) when a row is read with another row's record. Against the squared error
        it acts as a soft threshold: a record's change of ``x_0`` smaller than about
        ``2 * edit_weight * (1 - abar_t)`` window units is not worth its cost, so the weak,
        chance associations a fixed cohort has with regions an attribute never moves (the body,
        the air) are not learnt, while planted patterns of tens of HU are. With label levels
        the levels, fixed, carry each label's mean; the term acts on the rest. 0 (the default
        here; ``cfx train`` sets 0.01) skips the second pass.
    ema_decay : float
        Per-step decay of the weight average that checkpoints serve.
    clip_norm : float
        Gradients are rescaled to at most this total L2 norm per step (the norm before
        clipping is reported, see :mod:`cfx.models.training.guard`).
    seed : int
        Seeds the data and noise generators.
    mixed_precision : bool
        bfloat16 autocast on CUDA.
    """

    batch_size: int = 4
    lr: float = 2e-4
    fusion_lr_scale: float = 1.0
    p_uncond: float = 0.1
    edit_weight: float = 0.0
    ema_decay: float = 0.999
    clip_norm: float = 1.0
    seed: int = 0
    mixed_precision: bool = True


class DiffusionTrainer:
    """Holds the network, optimiser, EMA and random state of one training run.

    Parameters
    ----------
    model : CondDiffusion3D
        Trained in place; its text whitening must be fitted (see :meth:`fit_text`) or loaded.
    encoder : TextEncoder
        Frozen; phrases are encoded one at a time and each record's context is kept for the run.
    source : callable
        ``source(rng, batch_size) -> TrainingBatch``.
    settings : DiffusionSettings
    device : str or torch.device

    Attributes
    ----------
    network : CondDiffusion3D
        The network being trained (on ``device``, train mode).
    ema : CondDiffusion3D
        Its exponential moving average, what a checkpoint serves.
    main_loss : str
        The key of :meth:`train_step` that :class:`cfx.models.training.guard.TrainingGuard` watches
        for loss spikes.
    readouts : dict of str to dict
        Field -> the fit of its numeric read-out (:meth:`fit_text`); empty until then and on a
        resumed run.
    """

    main_loss = "mse"

    def __init__(self, model: CondDiffusion3D, encoder: TextEncoder, source: BatchSource,
                 settings: DiffusionSettings, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.settings = settings
        self.encoder = encoder
        self.source = source
        self.network = model.to(self.device).train()
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        if model.levels is not None:  # fitted in closed form (fit_levels), never by a step
            model.levels.requires_grad_(False)
        text, rest = [], []
        for name, parameter in self.network.named_parameters():
            if parameter.requires_grad:
                (text if ".film." in name or ".attn2." in name else rest).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [{"params": rest}, {"params": text, "lr": settings.lr * settings.fusion_lr_scale}],
            lr=settings.lr)
        self.scheduler = DDPMScheduler(**model.noise_schedule)
        self.rng = np.random.default_rng(settings.seed)
        self.noise = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.step = 0
        self.readouts: dict[str, dict] = {}
        self._contexts = RecordConditions(self.network, encoder)
        self._autocast = settings.mixed_precision and self.device.type == "cuda"
        self.rows = slice(None)  # this process's rows of each batch (see distribute)
        self._model = self.network
        self._distributed = False

    def distribute(self, rank: int, world: int) -> None:
        """Train as process ``rank`` of ``world`` data-parallel ones (an initialised
        ``torch.distributed`` process group): this process reads rows ``rows`` of every batch
        of ``settings.batch_size`` (the global batch), draws the timesteps, noise and condition
        dropout of the whole batch and keeps its rows, the network runs under
        ``DistributedDataParallel`` and the reported losses are averaged over the processes
        (see :mod:`cfx.models.training.distributed`). With ``edit_weight > 0`` each row is read
        with the record of the previous row of its own process's rows."""
        self.rows = shard_rows(self.settings.batch_size, rank, world)
        self.source = ShardedSource(self.source, self.rows)
        self._model = data_parallel(self.network)
        self._distributed = world > 1

    # -- text ---------------------------------------------------------------------------------

    def fit_text(self, phrases: Sequence[Sequence[str]],
                 values: Sequence[Sequence[float] | None] | None = None) -> list[dict | None]:
        """Fit the model's (and EMA's) per-field text whitening.

        Parameters
        ----------
        phrases : sequence of sequence of str
            Per field of the model, its distinct training phrases (more than its dims).
        values : sequence of (sequence of float or None), optional
            Numeric fields' values, read out; returns each field's read-out fit, also kept in
            :attr:`readouts` (as :meth:`cfx.models.training.gan.GANTrainer.fit_text`).
        """
        reports = self.network.fit_text([self.encoder.encode(list(p)).pooled.to(self.device)
                                         for p in phrases], values)
        self.ema.load_state_dict(self.network.state_dict())
        self._contexts.clear()
        self.readouts = {f: r for f, r in zip(self.network.fields, reports, strict=True) if r}
        return reports

    @torch.no_grad()
    def fit_levels(self, rows: int = LEVEL_ROWS) -> None:
        """Fit the label levels (model and EMA) once, in closed form
        (:func:`cfx.models.training.levels.fit_levels` on the flattened record context), over
        ``rows`` rows of the source with the records dropped as a step drops them
        (``p_uncond``), whole subjects where the source gives them, a fixed cohort's equally
        often (:func:`cfx.models.training.levels.level_draw`). Drawn with generators of their
        own (``seed + 1``): the run's data and noise are untouched, and every process of a
        data-parallel run fits the same levels."""
        model, settings = self.network, self.settings
        rng = np.random.default_rng(settings.seed + 1)
        next_batch, rows = level_draw(self.source, rng, rows, settings.batch_size)
        noise = torch.Generator(device="cpu").manual_seed(settings.seed + 1)

        def draw():
            batch = next_batch()
            labels, clean = self._tensors(batch)
            context = self._context(batch.phrases)
            dropped = torch.rand(len(context), generator=noise) < settings.p_uncond
            context = torch.where(dropped[:, None, None].to(self.device),
                                  model.null_condition(len(context)), context)
            return context.flatten(1), labels, clean

        weight, bias = fit_levels(draw, rows)
        for network in (model, self.ema):
            network.levels.weight.copy_(weight.to(network.levels.weight.device))
            network.levels.bias.copy_(bias.to(network.levels.bias.device))

    def _tensors(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_tensors(self.network, batch, self.device)

    def _context(self, phrases: Sequence[Mapping[str, str]]) -> torch.Tensor:
        return torch.cat([self._contexts(row) for row in phrases])

    # -- one step -----------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimiser update.

        Returns
        -------
        dict of str to float
            ``mse``: mean squared error of the prediction (velocity or noise);
            ``grad_norm``: the total gradient norm before clipping; with ``edit_weight > 0``
            ``edit``: the mean absolute change of the ``x_0`` estimate under another row's
            record (HU); with label levels ``level_mse``: mean squared error of the level map
            against the CT (window units).
        """
        settings, model = self.settings, self.network
        batch = self.source(self.rng, settings.batch_size)
        labels, clean = self._tensors(batch)
        rows, every = clean.shape[0], settings.batch_size  # draws for the whole batch, rows kept
        context = self._context(batch.phrases)
        noise = torch.randn((every, *clean.shape[1:]), generator=self.noise)[self.rows]
        noise = noise.to(self.device)
        timesteps = torch.randint(0, model.config["train_timesteps"], (every,),
                                  generator=self.noise)[self.rows].to(self.device)
        dropped = torch.rand(every, generator=self.noise)[self.rows] < settings.p_uncond
        dropped = dropped.to(self.device)
        context = torch.where(dropped[:, None, None], model.null_condition(rows), context)
        losses = {}
        if model.levels is not None:
            with torch.no_grad():
                levels = model.level_map(labels, context)
            losses["level_mse"] = F.mse_loss(levels, clean)
            clean = clean - levels
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        edit = settings.edit_weight > 0
        if edit:  # the same x_t read with the previous row's record too, in one pass
            swapped = context[torch.roll(torch.arange(rows, device=self.device), 1)]
            inputs = (noisy.repeat(2, 1, 1, 1, 1), labels.repeat(2, 1, 1, 1, 1),
                      timesteps.repeat(2), torch.cat([context, swapped]))
        else:
            inputs = (noisy, labels, timesteps, context)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            predicted = self._model(*inputs).float()
        if edit:
            predicted, other = predicted.chunk(2)
            losses["edit"] = (self._x0_scale(timesteps) * (other - predicted)).abs().mean()
        target = (noise if model.config["prediction"] == "epsilon"
                  else self.scheduler.get_velocity(clean, noise, timesteps))
        loss = F.mse_loss(predicted, target)
        loss_total = loss + settings.edit_weight * losses["edit"] if edit else loss
        self.optimizer.zero_grad(set_to_none=True)
        loss_total.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        self.optimizer.step()
        self.step += 1
        decay = min(settings.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), model.parameters(), strict=True):
                average.lerp_(current, 1 - decay)
        losses = {"mse": loss.item(), "grad_norm": norm.item(),
                  **{k: v.item() for k, v in losses.items()}}
        if edit:
            losses["edit"] *= (model.hu_window[1] - model.hu_window[0]) / 2
        return average_values(losses) if self._distributed else losses

    def _x0_scale(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Per row, the factor turning a change of the prediction into minus the change of the
        ``x_0`` estimate at ``timesteps``: ``sqrt(1 - abar_t)`` for the velocity,
        ``sqrt((1 - abar_t) / abar_t)`` for the noise; shape (B, 1, 1, 1, 1)."""
        abar = self.scheduler.alphas_cumprod.to(self.device)[timesteps]
        scale = (1 - abar).sqrt()
        if self.network.config["prediction"] == "epsilon":
            scale = scale / abar.sqrt()
        return scale[:, None, None, None, None]

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate of every parameter group by ``factor`` (kept in
        :meth:`training_state`)."""
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    # -- resume -------------------------------------------------------------------------------

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resume needs, as tensors (for safetensors) and JSON.

        Returns
        -------
        tensors : dict of str to Tensor
            ``model.*``, ``ema.*``, ``optimizer.*`` and ``rng.noise`` (the torch generator's
            state).
        meta : dict
            ``step``, the numpy generator's state, the optimiser's hyper-parameters and the
            settings.
        """
        tensors = {**module_tensors("model", self.network), **module_tensors("ema", self.ema)}
        state, groups = optimizer_tensors("optimizer", self.optimizer)
        tensors.update(state)
        tensors["rng.noise"] = self.noise.get_state()
        meta = {"step": self.step, "rng": rng_json(self.rng), "settings": asdict(self.settings),
                "optimizer": groups}
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore :meth:`training_state` (same architecture and settings)."""
        load_module("model", self.network, tensors)
        load_module("ema", self.ema, tensors)
        load_optimizer("optimizer", self.optimizer, tensors, meta["optimizer"], self.device)
        self.rng.bit_generator.state = meta["rng"]
        self.noise.set_state(tensors["rng.noise"])
        self.step = int(meta["step"])
        self._contexts.clear()

