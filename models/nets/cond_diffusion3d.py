"""The mask + text conditional 3D diffusion model: noisy CT, label map, timestep and clinical
record in, predicted velocity (or noise) out.

MONAI's ``DiffusionModelUNet`` (3D, ``with_conditioning``) reads the noisy image (window units)
with the one-hot label map concatenated as input channels, and predicts the velocity
``v = sqrt(abar_t) n - sqrt(1 - abar_t) x_0`` (or, with ``prediction="epsilon"``, the noise
``n`` that was added). The text enters by cross-attention (at the attention levels and in the middle
block) to a *context of one token per field* of the clinical record, in :attr:`fields` order::

    token f = [ field f's whitened vector, zero-padded to max(field_dims) | one-hot(f) | present ]

so the context has a fixed length ``F`` (no padding, no dependence on what a row is batched
with) and width ``max(field_dims) + F + 1``. Each field is written alone by the prompt template,
encoded alone and whitened by its own whitener
(:class:`cfx.models.text_conditioning.FieldWhitening`, as the GAN reads it). A missing field has a
zero vector (its training mean) and ``present = 0``: the one-hot keeps its position known, and the
flag tells "missing" apart from a value that whitens near the mean (a middle age does).
Classifier-free guidance's unconditional branch is the record with every field missing
(:meth:`CondDiffusion3D.null_condition`).

The same tokens, flattened, also modulate every residual block (FiLM, the GAN's affine fusion):
after the block's second GroupNorm, channel ``c`` becomes ``h_c (1 + gamma_c) + beta_c`` with
``(gamma, beta)`` a linear map of the record, zero at initialisation
(:class:`RecordModulation`). Measured on 32³ phantoms: with cross-attention alone (noise
prediction) the record had moved the lungs by 0.0 HU after 1000 steps; adding it to the timestep
embedding (MONAI's class-embedding slot, which the block adds *before* that GroupNorm, so a
spatially uniform shift is normalised away; velocity prediction) gave about 3 HU, as much off
the lungs as on them, after 1500; with FiLM, +10 HU after 500 and the planted +20 after 2000.

The noise schedule (``train_timesteps``, ``schedule``, ``beta_start``, ``beta_end``) belongs to
the trained network, so it is part of the config; training (MONAI ``DDPMScheduler``) and sampling
(``DDIMScheduler``, :mod:`cfx.models.sampling`) build their schedulers from
:attr:`CondDiffusion3D.noise_schedule`.

*Label levels* (``label_levels=True``, what ``cfx train`` builds by default): as the GAN's,
the record also sets each label's level on its own linear path (a linear map of the flattened
context, so a multiple regression on the fields with a missing indicator each),
:meth:`CondDiffusion3D.level_map`; the diffusion then models the residual, the CT minus that
map, and a sample is the residual drawn plus the map (:mod:`cfx.models.sampling`; from a CT,
the map of the record the CT shows is what comes off it).
A region's mean that moves with an attribute by a few HU is 1 % of the window, far below the
noise the network learns to remove at most timesteps: on 200 fixed phantom subjects (64³, 1200
steps) the network alone brought back 0.23 of the planted age effect and 0.43 of smoking's from
the CT at strength 0.6 (issue 16). Levels learnt beside the network by gradient steps had not
reached the cohort's least-squares fit after 1200 steps, and the network learnt to undo part of
them; a new run now fits them once, in closed form, before the first step and keeps them fixed
(:meth:`cfx.models.training.diffusion.DiffusionTrainer.fit_levels`). The UNet reads the record
too, and on 200 fixed subjects it learnt label means of its own that drifted as it trained
(from the CT, 0.89-1.08 of the planted effects at step 600, 0.79-1.59 at 1200), so sampling
holds each label's mean to its level (the record-free residual's label means, see
:mod:`cfx.models.sampling`): from noise, at steps 600 and 1200 alike, smoking 0.86, age 0.90,
mortality 0.95 and diagnosis 1.14, a null attribute -0.3 HU.

Intensities: window units as the GAN, ``-1`` at ``hu_window[0]`` and ``+1`` at ``hu_window[1]``,
a fixed window in the config. Unlike the GAN, the UNet normalises over space (GroupNorm) and its
attention levels attend over every voxel of the input, so its output depends on the whole window
it sees: a sampling window larger than the training patch sees other statistics than training
did (training on whole volumes avoids that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn
from torch.nn import functional as F

from cfx.models.text.interface import TextEncoding
from cfx.models.text_conditioning import FieldWhitening

__all__ = ["CondDiffusion3D", "RecordModulation", "PREDICTIONS", "SCHEDULES"]

SCHEDULES = ("linear_beta", "scaled_linear_beta")
PREDICTIONS = {"v_prediction": "velocity", "epsilon": "noise"}  # MONAI name -> what it is


class RecordModulation(nn.Module):
    """A normalisation followed by a FiLM of its channels from the record.

    ``forward(h)`` returns ``norm(h) * (1 + gamma) + beta`` per channel, where ``(gamma, beta)``
    is a linear map (zero at initialisation) of :attr:`record`, the flattened context of the
    batch, shape (N, width), which :class:`CondDiffusion3D` sets around each UNet pass.

    Parameters
    ----------
    norm : nn.Module
        The block's own normalisation.
    width : int
        Length of the flattened record context.
    channels : int
        Channels of ``h``.
    """

    def __init__(self, norm: nn.Module, width: int, channels: int):
        super().__init__()
        self.norm = norm
        self.film = nn.Linear(width, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.record: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.record is None:
            raise RuntimeError("RecordModulation: no record set; call it through CondDiffusion3D")
        gamma, beta = self.film(self.record).to(h.dtype).chunk(2, dim=1)
        shape = (*gamma.shape, *([1] * (h.ndim - 2)))
        return self.norm(h) * (1 + gamma.reshape(shape)) + beta.reshape(shape)


class CondDiffusion3D(nn.Module):
    """Noisy CT + label map + timestep + per-field text -> predicted velocity (or noise).

    Parameters
    ----------
    fields : sequence of str
        The record fields the text is read from, in a fixed order (the sweep edits one of them).
    field_dims : sequence of int
        Principal axes kept of each field's pooled embedding (at most its distinct phrases
        minus one).
    label_channels : int
        One-hot channels of the label map: background plus one per label (4 for the default
        vocabulary).
    channels : sequence of int
        UNet channels per level, finest first; ``len(channels) - 1`` downsamplings, so inputs
        must be divisible by ``2 ** (len(channels) - 1)`` per axis. Each a multiple of
        ``norm_num_groups``.
    attention_levels : sequence of bool, optional
        Levels with self- and cross-attention; default only the coarsest (attention over the
        voxels of a finer level costs the square of its voxel count).
    num_res_blocks : int
        Residual blocks per level.
    num_head_channels : int
        Channels per attention head; divides the channels of every attention level.
    norm_num_groups : int
        GroupNorm groups.
    text_width : int
        ``D`` of the text encoder.
    hu_window : sequence of 2 float
        ``(low, high)`` HU mapped to -1 and +1.
    train_timesteps : int
        ``T``, diffusion steps of the noise schedule.
    schedule : {"linear_beta", "scaled_linear_beta"}
        MONAI noise schedule.
    beta_start, beta_end : float
        First and last beta of the schedule, ``0 < beta_start < beta_end < 1``.
    prediction : {"v_prediction", "epsilon"}
        What the network predicts: the velocity ``v = sqrt(abar_t) n - sqrt(1 - abar_t) x_0``
        (default) or the noise ``n``. As a loss on the clean image, noise prediction weighs step
        ``t`` by its signal-to-noise ratio ``abar_t / (1 - abar_t)``, which vanishes at the
        noisy steps where only the record tells a smoker's lungs from a non-smoker's; velocity
        weighs it by ``1 / (1 - abar_t) >= 1``.
    label_levels : bool
        The record also sets each label's level (:meth:`level_map`); the network models the
        residual.

    Raises
    ------
    ValueError
        Any argument out of range; the message names it and the value received.
    """

    def __init__(self, fields: Sequence[str], field_dims: Sequence[int], label_channels: int = 4,
                 channels: Sequence[int] = (16, 32, 32),
                 attention_levels: Sequence[bool] | None = None, num_res_blocks: int = 1,
                 num_head_channels: int = 8, norm_num_groups: int = 8, text_width: int = 384,
                 hu_window: Sequence[float] = (-1024.0, 1024.0), train_timesteps: int = 1000,
                 schedule: str = "scaled_linear_beta", beta_start: float = 0.0005,
                 beta_end: float = 0.0195, prediction: str = "v_prediction",
                 label_levels: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        fields, field_dims = [str(f) for f in fields], [int(d) for d in field_dims]
        if attention_levels is None:
            attention_levels = [False] * (len(channels) - 1) + [True]
        attention_levels = [bool(a) for a in attention_levels]
        if not fields or len(set(fields)) != len(fields) or len(field_dims) != len(fields):
            raise ValueError(f"fields: need distinct names with one field_dims entry each, got "
                             f"{fields} and {field_dims}")
        if label_channels < 2:
            raise ValueError(f"label_channels: need background plus at least one label, got "
                             f"{label_channels}")
        if len(channels) < 2 or min(channels) < 1 or any(c % norm_num_groups for c in channels):
            raise ValueError(f"channels: need at least two levels, each a positive multiple of "
                             f"norm_num_groups={norm_num_groups}, got {channels}")
        if len(attention_levels) != len(channels):
            raise ValueError(f"attention_levels: need one entry per level ({len(channels)}), got "
                             f"{attention_levels}")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks: must be >= 1, got {num_res_blocks}")
        attended = [c for c, a in zip(channels, attention_levels, strict=True) if a]
        if num_head_channels < 1 or any(c % num_head_channels for c in [*attended, channels[-1]]):
            raise ValueError(f"num_head_channels: must divide the channels of every attention "
                             f"level and the last one {channels[-1]}, got {num_head_channels}")
        low, high = (float(v) for v in hu_window)
        if not low < high:
            raise ValueError(f"hu_window: need low < high, got {(low, high)}")
        if train_timesteps < 2:
            raise ValueError(f"train_timesteps: must be >= 2, got {train_timesteps}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if not 0 < beta_start < beta_end < 1:
            raise ValueError(f"beta_start, beta_end: need 0 < beta_start < beta_end < 1, got "
                             f"{beta_start} and {beta_end}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: must be one of {', '.join(PREDICTIONS)}, got "
                             f"{prediction!r}")
        self.config = {"fields": fields, "field_dims": field_dims,
                       "label_channels": int(label_channels), "channels": list(channels),
                       "attention_levels": attention_levels, "num_res_blocks": int(num_res_blocks),
                       "num_head_channels": int(num_head_channels),
                       "norm_num_groups": int(norm_num_groups), "text_width": int(text_width),
                       "hu_window": [low, high], "train_timesteps": int(train_timesteps),
                       "schedule": schedule, "beta_start": float(beta_start),
                       "beta_end": float(beta_end), "prediction": prediction,
                       "label_levels": bool(label_levels)}
        self.fields = tuple(fields)
        self.hu_window = (low, high)
        self.multiple = 2 ** (len(channels) - 1)
        self.vector_dims = max(field_dims)
        self.context_dims = self.vector_dims + len(fields) + 1

        self.text = FieldWhitening(text_width, field_dims)
        self.unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=1 + label_channels, out_channels=1,
            num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
            norm_num_groups=norm_num_groups, num_head_channels=num_head_channels,
            with_conditioning=True, cross_attention_dim=self.context_dims,
            use_flash_attention=True)
        self.modulations = []
        for block in self.unet.modules():
            if isinstance(block, DiffusionUNetResnetBlock):
                block.norm2 = RecordModulation(block.norm2, len(fields) * self.context_dims,
                                               block.out_channels)
                self.modulations.append(block.norm2)
        self.levels = None
        if label_levels:
            self.levels = nn.Linear(len(fields) * self.context_dims, label_channels)
            nn.init.zeros_(self.levels.weight)
            nn.init.zeros_(self.levels.bias)

    @property
    def noise_schedule(self) -> dict:
        """Keyword arguments of a MONAI ``DDPMScheduler``/``DDIMScheduler`` with this network's
        noise schedule and prediction type."""
        return {"num_train_timesteps": self.config["train_timesteps"],
                "schedule": self.config["schedule"], "beta_start": self.config["beta_start"],
                "beta_end": self.config["beta_end"], "prediction_type": self.config["prediction"]}

    # -- text ---------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_text(self, pooled: Sequence[torch.Tensor],
                 values: Sequence[Sequence[float] | None] | None = None) -> list[dict | None]:
        """Fit the per-field whitening on the training phrases' embeddings.

        Parameters
        ----------
        pooled : sequence of Tensor of float32, shapes (N_f, D)
            Per field (in :attr:`fields` order), the pooled embeddings of its distinct phrases,
            ``N_f`` more than its ``field_dims``.
        values : sequence of (sequence of float or None), optional
            Numeric fields' values, read out; returns each field's read-out fit (see
            :meth:`cfx.models.text_conditioning.FieldWhitening.fit`).
        """
        return self.text.fit(pooled, values)

    def _context(self, vectors: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(N, K_f) per field and (N, F) presence -> (N, F, context_dims)."""
        rows, count = present.shape
        padded = torch.stack([F.pad(v, (0, self.vector_dims - v.shape[1])) for v in vectors],
                             dim=1)
        position = torch.eye(count, device=present.device).expand(rows, count, count)
        return torch.cat([padded, position, present[..., None].float()], dim=2)

    def condition(self, fields: Sequence[TextEncoding | None]) -> torch.Tensor:
        """The context tokens of one record.

        Parameters
        ----------
        fields : sequence of TextEncoding or None
            Per field (in :attr:`fields` order), its phrase encoded alone (one row), or None
            where the record lacks it.

        Returns
        -------
        Tensor of float32, shape (1, F, context_dims)
            Stack rows with ``torch.cat``: every record has the same ``F`` tokens.
        """
        if len(fields) != len(self.fields):
            raise ValueError(f"fields: need one entry per field ({len(self.fields)}), got "
                             f"{len(fields)}")
        if any(e is not None and len(e) != 1 for e in fields):
            raise ValueError("fields: each encoding must hold one phrase (one row)")
        device = self.text[0].mean.device
        vectors = self.text([None if e is None else e.pooled.to(device) for e in fields])
        present = torch.tensor([[e is not None for e in fields]], device=device)
        return self._context(vectors, present)

    def null_condition(self, rows: int = 1) -> torch.Tensor:
        """The context of a record with every field missing (classifier-free guidance's
        unconditional branch), shape (rows, F, context_dims)."""
        return self.condition([None] * len(self.fields)).expand(rows, -1, -1)

    # -- intensities --------------------------------------------------------------------------

    def to_hu(self, output: torch.Tensor) -> torch.Tensor:
        """Window units -> HU, clipped to the window."""
        low, high = self.hu_window
        return (output.clamp(-1, 1) + 1) * ((high - low) / 2) + low

    def from_hu(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> window units, clipped to [-1, 1]."""
        low, high = self.hu_window
        return ((hu - low) * (2 / (high - low)) - 1).clamp(-1, 1)

    # -- label levels -------------------------------------------------------------------------

    def level_map(self, labels: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Each label's level under each row's record, where the label is (zeros without label
        levels).

        Parameters
        ----------
        labels : Tensor of float32, shape (N or 1, label_channels, X, Y, Z)
            One-hot label map.
        context : Tensor of float32, shape (N, F, context_dims)

        Returns
        -------
        Tensor of float32, shape (N, 1, X, Y, Z)
            Window units.
        """
        rows = context.shape[0]
        if self.levels is None:
            return labels.new_zeros((rows, 1, *labels.shape[2:]))
        levels = self.levels(context.flatten(1).to(labels.dtype))  # (N, label_channels)
        return torch.einsum("nl,nlxyz->nxyz", levels,
                            labels.expand(rows, *labels.shape[1:]))[:, None]

    # -- network ------------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, labels: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        """Predict the velocity (or noise) of each row.

        Parameters
        ----------
        sample : Tensor of float32, shape (N, 1, X, Y, Z)
            Noisy image at ``timesteps``, window units; ``X, Y, Z`` divisible by
            :attr:`multiple`.
        labels : Tensor of float32, shape (N, label_channels, X, Y, Z)
            One-hot label map.
        timesteps : Tensor of int64, shape (N,)
            Diffusion step of each row, in ``[0, train_timesteps)``.
        context : Tensor of float32, shape (N, F, context_dims)
            See :meth:`condition` and :meth:`null_condition`.

        Returns
        -------
        Tensor, shape (N, 1, X, Y, Z)
            Predicted velocity (or standard normal noise, see ``prediction``).
        """
        for modulation in self.modulations:
            modulation.record = context.flatten(1)
        try:
            return self.unet(torch.cat([sample, labels], dim=1), timesteps, context)
        finally:
            for modulation in self.modulations:
                modulation.record = None
