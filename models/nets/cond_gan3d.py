"""The mask + text conditional 3D GAN generator: label map and noise in, CT out.

A 3D encoder-decoder (U-Net shape) reads the one-hot label map and a spatial noise channel;
the text enters at the bottleneck and at every decoder level through one fusion mechanism
(:mod:`cfx.models.nets.fusion`): ``"affine"`` (linear FiLM from the whitened field vectors and a
noise vector) or ``"cross-attention"`` (voxels attend to the whitened tokens of the fields).

The text is read *per field*: each field of the clinical record (age, smoking, ...) is written
by the prompt template alone and encoded on its own, then whitened by that field's own
whitener (:class:`cfx.models.text_conditioning.FieldWhitening`); a missing field reads as zeros (its
training mean). A whole prompt's pooled embedding would not do: the mean over all its tokens
dilutes one field's words by the others', so the same smoker/non-smoker edit moves a long
prompt's embedding about half as far as a short one's, and a generator fed whole prompts learns
an effect that shrinks as records get more complete. The whitening statistics are buffers of the
generator, fitted on the training records' phrases, so a checkpoint carries them.

*Label levels* (``label_levels=True``): the record also sets each label's level on its own
linear path, added to the output wherever the label is. Without it, a record's pull on a
region's mean has to pass through the decoder's spatially uniform FiLM, which learns it slowly
and spreads it over the whole volume: on 200 fixed phantom subjects (64³, 1200 steps, body
channel, regional-mean loss) planted lung effects came back at 0.32-0.60 of their size, and with
the levels at 0.83-0.95 (0.67-1.41 over three such models of 1200-2400 steps; issue 16). The
levels are a multiple regression of each label's mean on the fields, so confounded attributes
(smokers older, more often IPF) are told apart as a regression tells them apart; the network is
left the texture and where inside a label an effect sits. With both paths free, the levels and
the FiLM can drift against each other, which the training records do not see and an edit does
(change where the record never acts); a trainer that decays the FiLM's record weights
(``GANSettings.film_decay``) leaves a label's mean to its level. Learnt by steps beside the
FiLM, the levels of the GAN bundled before alone would have moved the body by 6-7 HU per
smoking or age edit, which its FiLM undid, so a new run fits them once in closed form and
keeps them fixed (``GANSettings.level_rows``, :mod:`cfx.models.training.levels`), and
sampling holds each label's mean to its level (:func:`cfx.models.inference.generate_volumes`).

Intensities: the output is in window units, ``-1`` at ``hu_window[0]`` and ``+1`` at
``hu_window[1]``, a fixed window stored in the config (never per volume). No layer normalises
over space, so the network is the same function in every sliding window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cfx.models.nets.fusion import AffineFusion, CrossAttentionFusion
from cfx.models.text.interface import TextEncoding
from cfx.models.text_conditioning import EmbeddingWhitener, FieldWhitening

__all__ = ["CondGAN3DGenerator", "TextCondition", "FUSIONS"]

FUSIONS = ("affine", "cross-attention")


@dataclass(frozen=True, eq=False)
class TextCondition:
    """Whitened text, as a generator reads it.

    Attributes
    ----------
    pooled : Tensor of float32, shape (N, K)
        The whitened pooled vectors of the fields, one after the other (zeros where a field is
        missing).
    tokens : Tensor of float32, shape (N, L, K_t), or None
        The whitened token embeddings of the present fields, one after the other
        (cross-attention only).
    token_mask : Tensor of bool, shape (N, L), or None
        True at real tokens.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def select(self, index: torch.Tensor | Sequence[int]) -> TextCondition:
        """Rows ``index`` (a batch drawn from a table of conditions)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.pooled.device)
        if self.tokens is None:
            return TextCondition(self.pooled[index])
        return TextCondition(self.pooled[index], self.tokens[index], self.token_mask[index])

    @classmethod
    def stack(cls, rows: Sequence[TextCondition]) -> TextCondition:
        """Rows one under the other; token rows are padded (masked) to the longest."""
        pooled = torch.cat([r.pooled for r in rows])
        if rows[0].tokens is None:
            return cls(pooled)
        length = max(r.tokens.shape[1] for r in rows)
        tokens = torch.cat([F.pad(r.tokens, (0, 0, 0, length - r.tokens.shape[1]))
                            for r in rows])
        mask = torch.cat([F.pad(r.token_mask, (0, length - r.token_mask.shape[1]))
                          for r in rows])
        return cls(pooled, tokens, mask)

    def to(self, device: str | torch.device) -> TextCondition:
        if self.tokens is None:
            return TextCondition(self.pooled.to(device))
        return TextCondition(self.pooled.to(device), self.tokens.to(device),
                             self.token_mask.to(device))


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(h, 0.2)), 0.2))


class CondGAN3DGenerator(nn.Module):
    """Label map + spatial noise + text -> CT in window units.

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
        Feature channels per resolution level, finest first; ``len(channels) - 1``
        downsamplings, so inputs must be divisible by ``2 ** (len(channels) - 1)`` per axis.
    fusion : {"affine", "cross-attention"}
        How the text enters (see :mod:`cfx.models.nets.fusion`).
    text_width : int
        ``D`` of the text encoder.
    token_dims : int
        ``K_t``: principal axes kept of the token embeddings (cross-attention).
    noise_dims : int
        Length of the noise vector fed to the affine fusion with the text (0 for none).
    heads : int
        Attention heads (cross-attention); divides every decoder level's channels.
    hu_window : sequence of 2 float
        ``(low, high)`` HU mapped to -1 and +1.
    gate : bool
        Gate the affine fusion by anatomy: a learned weight per label and channel at every
        level says how far the record reaches each label (see :mod:`cfx.models.nets.fusion`).
    label_levels : bool
        Add a level per label set linearly by the whitened fields: the output gains
        ``sum_l onehot_l * (A pooled + b)_l`` (window units; ``A``, ``b`` start at 0), so a
        record shifts each anatomical region's mean on its own path, as a multiple regression
        of that region's level on the fields, and the network is left the texture.
    hold_levels : bool
        With label levels fitted in closed form (not learnt by steps): whole-volume
        generation holds each label's mean to its level
        (:func:`cfx.models.inference.generate_volumes`).

    Raises
    ------
    ValueError
        Any argument out of range; the message names it and the value received.
    """

    def __init__(self, fields: Sequence[str], field_dims: Sequence[int], label_channels: int = 4,
                 channels: Sequence[int] = (16, 32, 64, 64), fusion: str = "affine",
                 text_width: int = 384, token_dims: int = 32, noise_dims: int = 8,
                 heads: int = 4, hu_window: Sequence[float] = (-1024.0, 1024.0),
                 gate: bool = False, label_levels: bool = False, hold_levels: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        fields, field_dims = [str(f) for f in fields], [int(d) for d in field_dims]
        if not fields or len(set(fields)) != len(fields) or len(field_dims) != len(fields):
            raise ValueError(f"fields: need distinct names with one field_dims entry each, got "
                             f"{fields} and {field_dims}")
        if label_channels < 2:
            raise ValueError(f"label_channels: need background plus at least one label, got "
                             f"{label_channels}")
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels: need at least two positive levels, got {channels}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if noise_dims < 0:
            raise ValueError(f"noise_dims: must be >= 0, got {noise_dims}")
        if fusion == "cross-attention" and any(c % heads for c in channels):
            raise ValueError(f"heads: must divide every level's channels {channels}, got "
                             f"{heads}")
        if gate and fusion != "affine":
            raise ValueError(f"gate: applies to the affine fusion only, got {fusion!r}")
        if hold_levels and not label_levels:
            raise ValueError("hold_levels: needs label_levels")
        low, high = (float(v) for v in hu_window)
        if not low < high:
            raise ValueError(f"hu_window: need low < high, got {(low, high)}")
        self.config = {"fields": fields, "field_dims": field_dims,
                       "label_channels": int(label_channels), "channels": list(channels),
                       "fusion": fusion, "text_width": int(text_width),
                       "token_dims": int(token_dims),
                       "noise_dims": int(noise_dims), "heads": int(heads),
                       "hu_window": [low, high], "gate": bool(gate),
                       "label_levels": bool(label_levels), "hold_levels": bool(hold_levels)}
        self.fusion = fusion
        self.fields = tuple(fields)
        self.text_dims = sum(field_dims)
        self.noise_dims = int(noise_dims)
        self.hu_window = (low, high)
        self.multiple = 2 ** (len(channels) - 1)

        self.text = FieldWhitening(text_width, field_dims)
        self.tokens = EmbeddingWhitener(text_width, token_dims) \
            if fusion == "cross-attention" else None

        self.stem = nn.Conv3d(label_channels + 1, channels[0], 3, padding=1)
        self.encoder = nn.ModuleList(_ResBlock(c) for c in channels[:-1])
        self.down = nn.ModuleList(nn.Conv3d(a, b, 3, stride=2, padding=1)
                                  for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.bottleneck = _ResBlock(channels[-1])
        self.up = nn.ModuleList(nn.Conv3d(b, a, 3, padding=1)
                                for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.merge = nn.ModuleList(nn.Conv3d(2 * c, c, 3, padding=1) for c in channels[:-1])
        self.decoder = nn.ModuleList(_ResBlock(c) for c in channels[:-1])
        fused = (channels[-1], *reversed(channels[:-1]))  # bottleneck, then coarse to fine
        if fusion == "affine":
            self.fuse = nn.ModuleList(
                AffineFusion(c, self.text_dims + noise_dims, label_channels if gate else 0)
                for c in fused)
        else:
            self.fuse = nn.ModuleList(CrossAttentionFusion(c, token_dims, heads) for c in fused)
        self.head = nn.Conv3d(channels[0], 1, 3, padding=1)
        self.label_levels = nn.Linear(self.text_dims, label_channels) if label_levels else None
        if label_levels:
            nn.init.zeros_(self.label_levels.weight)
            nn.init.zeros_(self.label_levels.bias)

    # -- text ---------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_text(self, pooled: Sequence[torch.Tensor], tokens: torch.Tensor | None = None,
                 values: Sequence[Sequence[float] | None] | None = None) -> list[dict | None]:
        """Fit the whitening on the training phrases' embeddings.

        Parameters
        ----------
        pooled : sequence of Tensor of float32, shapes (N_f, D)
            Per field (in :attr:`fields` order), the pooled embeddings of its distinct phrases,
            ``N_f`` more than its ``field_dims``.
        tokens : Tensor of float32, shape (M, D), optional
            Every real token of those phrases; needed for cross-attention.
        values : sequence of (sequence of float or None), optional
            Per field, the value each phrase writes where the field is numeric and read out
            (:meth:`cfx.models.text_conditioning.FieldWhitening.fit`).

        Returns
        -------
        list of dict or None
            Per field, its read-out's fit (None for a whitened field).
        """
        if self.tokens is not None and tokens is None:
            raise ValueError("tokens: cross-attention needs the phrases' token embeddings")
        reports = self.text.fit(pooled, values)
        if self.tokens is not None:
            self.tokens.fit(tokens)
        return reports

    def condition(self, fields: Sequence[TextEncoding | None]) -> TextCondition:
        """Whiten one record's encoded phrases.

        Parameters
        ----------
        fields : sequence of TextEncoding or None
            Per field (in :attr:`fields` order), its phrase encoded alone (one row), or None
            where the record lacks it.

        Returns
        -------
        TextCondition
            One row. With no field present, cross-attention reads one zero token (the training
            mean).
        """
        if len(fields) != len(self.fields):
            raise ValueError(f"fields: need one entry per field ({len(self.fields)}), got "
                             f"{len(fields)}")
        if any(e is not None and len(e) != 1 for e in fields):
            raise ValueError("fields: each encoding must hold one phrase (one row)")
        anchor = self.text[0].mean
        pooled = torch.cat(self.text([None if e is None else e.pooled.to(anchor.device)
                                      for e in fields]), dim=1)
        if self.tokens is None:
            return TextCondition(pooled)
        tokens = [self.tokens(e.tokens[0, e.mask[0]].to(anchor.device))
                  for e in fields if e is not None]
        tokens = torch.cat(tokens) if tokens else anchor.new_zeros(1, self.tokens.dims)
        return TextCondition(pooled, tokens[None],
                             torch.ones(1, len(tokens), dtype=torch.bool, device=anchor.device))

    # -- intensities --------------------------------------------------------------------------

    def to_hu(self, output: torch.Tensor) -> torch.Tensor:
        """Window units -> HU, clipped to the window."""
        low, high = self.hu_window
        return (output.clamp(-1, 1) + 1) * ((high - low) / 2) + low

    def from_hu(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> window units, clipped to [-1, 1]."""
        low, high = self.hu_window
        return ((hu - low) * (2 / (high - low)) - 1).clamp(-1, 1)

    # -- network ------------------------------------------------------------------------------

    def gates(self) -> list[nn.Parameter]:
        """The label gates of the fusion layers, bottleneck first (each (labels, channels));
        empty without a gate."""
        return [block.gate for block in self.fuse if getattr(block, "gate", None) is not None]

    def film_text_weights(self) -> list[torch.Tensor]:
        """Views of the columns of each affine fusion's projection that read the whitened
        record (each (2 C, text_dims)), bottleneck first; empty with cross-attention fusion."""
        if self.fusion != "affine":
            return []
        return [block.project.weight[:, :self.text_dims] for block in self.fuse]

    def forward(self, labels: torch.Tensor, noise: torch.Tensor, condition: TextCondition,
                noise_vector: torch.Tensor | None = None) -> torch.Tensor:
        """One CT per row.

        Parameters
        ----------
        labels : Tensor of float32, shape (N, label_channels, X, Y, Z)
            One-hot label map; ``X, Y, Z`` divisible by :attr:`multiple`.
        noise : Tensor of float32, shape (N, 1, X, Y, Z)
            Standard normal noise; paired counterfactuals pass the same tensor.
        condition : TextCondition
            ``N`` rows (see :meth:`condition`).
        noise_vector : Tensor of float32, shape (N, noise_dims), optional
            Standard normal; zeros when omitted.

        Returns
        -------
        Tensor of float32, shape (N, 1, X, Y, Z)
            Window units (see :meth:`to_hu`), not clipped.
        """
        # 1. encode the label map and noise, keeping one skip per level
        h = self.stem(torch.cat([labels, noise], dim=1))
        skips = []
        for block, down in zip(self.encoder, self.down, strict=True):
            h = block(h)
            skips.append(h)
            h = down(F.leaky_relu(h, 0.2))
        # 2. the conditioning each fusion reads (with a gate: each label's share of its voxels)
        if self.fusion == "affine":
            if noise_vector is None:
                noise_vector = condition.pooled.new_zeros(len(condition), self.noise_dims)
            vector = torch.cat([condition.pooled, noise_vector], dim=1)

            def fuse(block, features):
                if block.gate is None:
                    return block(features, vector)
                factor = labels.shape[2] // features.shape[2]
                shares = F.avg_pool3d(labels, factor) if factor > 1 else labels
                return block(features, vector, shares)
        else:
            def fuse(block, features):
                return block(features, condition.tokens, condition.token_mask)
        # 3. bottleneck, then decode coarse to fine with the text fused at every level
        h = fuse(self.fuse[0], self.bottleneck(h))
        for i, level in enumerate(reversed(range(len(skips)))):
            h = F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=False)
            h = self.up[level](F.leaky_relu(h, 0.2))
            h = self.merge[level](torch.cat([h, skips[level]], dim=1))
            h = fuse(self.fuse[i + 1], self.decoder[level](h))
        output = self.head(F.leaky_relu(h, 0.2))
        if self.label_levels is None:
            return output
        shift = self.label_levels(condition.pooled).to(output.dtype)  # (N, label_channels)
        return output + torch.einsum("nl,nlxyz->nxyz", shift, labels.to(output.dtype))[:, None]
