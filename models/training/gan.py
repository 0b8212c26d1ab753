"""Adversarial + L1 training of :class:`cfx.models.nets.cond_gan3d.CondGAN3DGenerator`.

The loop knows nothing of files or cohorts: a *batch source* (any callable
``(numpy Generator, batch_size) -> TrainingBatch``) hands it label maps, CTs in HU and each
row's clinical record as per-field phrases, and a text encoder turns the phrases into
embeddings. Everything random in a step comes from
two generators the trainer owns (numpy for the data, torch for the noise), and their states are
part of :meth:`GANTrainer.training_state`, so a run stopped and resumed from a save continues
exactly as if it had not stopped.

Per step: the generator draws one CT per batch row from the label map, a fresh spatial noise
field and noise vector and the whitened fields; the discriminator (MONAI
``PatchDiscriminator``, which sees the image together with the one-hot labels and the whitened
field vectors as constant channels) is updated with the least-squares adversarial loss (MONAI
``PatchAdversarialLoss``); the generator is updated with ``l1_weight * L1 + region_weight *
region + edit_weight * edit + adversarial_weight * adversarial``; an exponential moving average
(EMA) of the generator's weights is what a checkpoint serves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from torch.nn import functional as F

from cfx.models.nets.cond_gan3d import CondGAN3DGenerator, TextCondition
from cfx.models.text.cache import RecordConditions
from cfx.models.text.interface import TextEncoder
from cfx.models.training.distributed import (
    ShardedSource,
    average_values,
    data_parallel,
    shard_rows,
)
from cfx.models.training.levels import fit_levels, level_draw
from cfx.models.training.state import (
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_tensors,
    rng_json,
)

__all__ = ["GANSettings", "GANTrainer", "TrainingBatch", "BatchSource", "batch_tensors",
           "region_mean_error"]


@dataclass(frozen=True)
class TrainingBatch:
    """What a batch source returns.

    Attributes
    ----------
    labels : ndarray of int64, shape (N, X, Y, Z)
        Channel index per voxel: 0 background, ``i`` for the ``i``-th label of the
        checkpoint's vocabulary.
    ct : ndarray of float32, shape (N, X, Y, Z)
        Target CT in HU.
    phrases : list of mapping of str to str, length N
        Per row, field -> that field's text alone (see
        :meth:`cfx.counterfactual.prompts.PromptTemplate.phrases`); a missing field is absent.
    """

    labels: np.ndarray
    ct: np.ndarray
    phrases: list[Mapping[str, str]]


BatchSource = Callable[[np.random.Generator, int], TrainingBatch]


def region_mean_error(fake: torch.Tensor, real: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the label means of two batches of images.

    Parameters
    ----------
    fake, real : Tensor of float32, shape (N, 1, X, Y, Z)
    labels : Tensor of float32, shape (N, L, X, Y, Z)
        One-hot label map.

    Returns
    -------
    Tensor, shape ()
        ``|mean(fake) - mean(real)|`` over each label's voxels, averaged over the (row, label)
        pairs whose label is present in the row; in the images' units.
    """
    counts = labels.sum(dim=(2, 3, 4))
    difference = (labels * (fake - real)).sum(dim=(2, 3, 4))
    present = counts > 0
    return (difference[present] / counts[present]).abs().mean()


@dataclass(frozen=True)
class GANSettings:
    """Optimisation settings (the checkpoint's ``training`` config records them).

    Attributes
    ----------
    batch_size : int
    lr_generator, lr_discriminator : float
        Adam learning rates (betas 0.5, 0.999).
    fusion_lr_scale : float
        The text layers (fusion and label levels) learn at ``fusion_lr_scale * lr_generator``:
        the text's share of the loss is small (a +20 HU shift under ~30 HU of noise), so with
        one rate the anatomy is learnt long before the attributes.
    l1_weight, adversarial_weight : float
        Generator loss weights (L1 in window units). With ``adversarial_weight == 0`` the
        generator learns from L1 alone and the discriminator is neither run nor updated (its
        weights and optimiser state are kept as they are for a later adversarial phase).
    region_weight : float
        Weight of the regional-mean loss: per row and label of the patch, the absolute
        difference (window units) between the mean of the draw and of the CT over that
        label's voxels, averaged. L1 fits each voxel's median, and only through the sign of
        its error, so a shift of a region's level by a record (+20 HU under ~30 HU of
        texture) and a record's pull on a region it never moves (the air around the body)
        are slow to learn; this term fits every label's mean directly, the quantity the
        statistics compare. 0 (the default) leaves it out.
    edit_weight : float
        Weight of the minimal-edit loss: the mean L1 change (window units) between each row's
        draw and the same draw (same labels and noise) read with the next row's record. It
        asks every edit to be as small as the data allows, wherever it acts: an effect the
        training CTs support outweighs it, a change they do not (the body moved by a record
        that never moves it) does not. 0 (the default) skips the second draw.
    gate_decay : float
        With a gated generator (``CondGAN3DGenerator(gate=True)``), after every step each
        label gate's weights shrink by the factor ``1 - gate_decay * lr`` (``lr`` of the fusion
        layers), decoupled from Adam like AdamW's weight decay: a gate the data do not hold
        open decays towards 0 (``exp(-gate_decay * lr * steps)``), so the record stops reaching
        labels where it explains nothing. 0 leaves the gates free.
    film_decay : float
        With label levels (``CondGAN3DGenerator(label_levels=True)``) a label's mean can move
        by two paths, its level and the FiLM; with their weights drifting in opposite
        directions the training records come out the same, a counterfactual record does not,
        and the residue is change where the record never acts. After every step, the columns
        of each affine fusion's projection that read the record shrink by the factor
        ``1 - film_decay * lr`` (``lr`` of the text layers; decoupled, like ``gate_decay``), so
        the FiLM keeps only what the data hold it to and the free levels take the label means.
        The noise columns, biases and levels are left alone. 0 (this class's default) leaves
        the FiLM free; ``cfx train`` starts new runs at 2.
    level_rows : int
        With label levels, > 0: the levels are fitted once in closed form
        (:meth:`GANTrainer.fit_levels`, over this many rows) and no step moves them; 0 (this
        class's default, and runs made before) learns them by gradient steps.
    ema_decay : float
        Per-step decay of the weight average that checkpoints serve.
    discriminator_channels : int
        Channels of the first ``PatchDiscriminator`` layer.
    discriminator_layers : int
        Its ``num_layers_d``.
    clip_norm : float
        Gradients of each network are rescaled to at most this total L2 norm per step (the
        networks have no normalisation layers, so this is what keeps a large learning rate
        stable); the norm before clipping is reported (see :mod:`cfx.models.training.guard`).
    seed : int
        Seeds the data and noise generators.
    mixed_precision : bool
        bfloat16 autocast on CUDA.
    """

    batch_size: int = 4
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    fusion_lr_scale: float = 1.0
    l1_weight: float = 100.0
    adversarial_weight: float = 1.0
    region_weight: float = 0.0
    edit_weight: float = 0.0
    gate_decay: float = 0.0
    film_decay: float = 0.0
    level_rows: int = 0
    ema_decay: float = 0.995
    discriminator_channels: int = 8
    discriminator_layers: int = 3
    clip_norm: float = 1.0
    seed: int = 0
    mixed_precision: bool = True


def batch_tensors(network, batch: TrainingBatch,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's one-hot label map (N, label_channels, X, Y, Z) and CT in ``network``'s window
    units (N, 1, X, Y, Z), on ``device`` (either architecture's network)."""
    labels = F.one_hot(torch.from_numpy(batch.labels).long(),
                       network.config["label_channels"]).permute(0, 4, 1, 2, 3).float()
    clean = network.from_hu(torch.from_numpy(batch.ct)[:, None].float().to(device))
    return labels.to(device), clean


class GANTrainer:
    """Holds the networks, optimisers, EMA and random state of one training run.

    Parameters
    ----------
    generator : CondGAN3DGenerator
        Trained in place; its text whitening must be fitted (see :meth:`fit_text`) or loaded.
    encoder : TextEncoder
        Frozen; phrases are encoded one at a time (so an embedding never depends on what it was
        batched with) and each record's whitened form is kept for the run.
    source : callable
        ``source(rng, batch_size) -> TrainingBatch``.
    settings : GANSettings
    device : str or torch.device

    Attributes
    ----------
    network : CondGAN3DGenerator
        The network being trained (on ``device``, train mode).
    ema : CondGAN3DGenerator
        Its exponential moving average, what a checkpoint serves.
    main_loss : str
        The key of :meth:`train_step` that :class:`cfx.models.training.guard.TrainingGuard` watches
        for loss spikes.
    readouts : dict of str to dict
        Field -> the fit of its numeric read-out (:meth:`fit_text`); empty until then and on a
        resumed run.
    """

    main_loss = "l1"

    def __init__(self, generator: CondGAN3DGenerator, encoder: TextEncoder, source: BatchSource,
                 settings: GANSettings, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.settings = settings
        self.encoder = encoder
        self.source = source
        self.network = generator.to(self.device).train()
        self.ema = copy.deepcopy(generator).eval().requires_grad_(False)
        if settings.level_rows > 0 and generator.label_levels is not None:
            generator.label_levels.requires_grad_(False)  # fitted in closed form (fit_levels)
        in_channels = 1 + generator.config["label_channels"] + generator.text_dims
        self.discriminator = PatchDiscriminator(
            spatial_dims=3, channels=settings.discriminator_channels, in_channels=in_channels,
            num_layers_d=settings.discriminator_layers).to(self.device).train()
        text = ("fuse.", "label_levels.")
        backbone = [p for n, p in self.network.named_parameters() if not n.startswith(text)]
        fusion = [p for n, p in self.network.named_parameters() if n.startswith(text)]
        self.optimizer_g = torch.optim.Adam(
            [{"params": backbone},
             {"params": fusion, "lr": settings.lr_generator * settings.fusion_lr_scale}],
            lr=settings.lr_generator, betas=(0.5, 0.999))
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(),
                                            lr=settings.lr_discriminator, betas=(0.5, 0.999))
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.rng = np.random.default_rng(settings.seed)
        self.noise = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.step = 0
        self.readouts: dict[str, dict] = {}
        self._conditions = RecordConditions(self.network, encoder)
        self._autocast = settings.mixed_precision and self.device.type == "cuda"
        self.rows = slice(None)  # this process's rows of each batch (see distribute)
        self._generator, self._discriminator = self.network, self.discriminator
        self._distributed = False

    def distribute(self, rank: int, world: int) -> None:
        """Train as process ``rank`` of ``world`` data-parallel ones (an initialised
        ``torch.distributed`` process group): this process reads rows ``rows`` of every batch
        of ``settings.batch_size`` (the global batch), draws the noise of the whole batch and
        keeps its rows, both networks run under ``DistributedDataParallel`` (gradients averaged
        over the processes), and the reported losses are averaged over them. Every process
        then holds the same weights, EMA, optimiser and random states after each step as one
        process training on the whole batch (see :mod:`cfx.models.training.distributed` for the
        tolerance); with ``edit_weight > 0`` each row's record is swapped with the previous row
        of its own process's rows. The discriminator normalises with BatchNorm: on CUDA it is
        converted to ``SyncBatchNorm`` (statistics of the global batch); on CPU (gloo) each
        process normalises over its own rows, which is where a CPU run departs from one
        process on the whole batch (measured in ``tests/models/training/test_distributed.py``).
        """
        self.rows = shard_rows(self.settings.batch_size, rank, world)
        self.source = ShardedSource(self.source, self.rows)
        self._generator = data_parallel(self.network)
        if self.device.type == "cuda":  # batch statistics of the global batch (NCCL only)
            self.discriminator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
                self.discriminator)
        self._discriminator = data_parallel(self.discriminator)
        self._distributed = world > 1

    # -- text ---------------------------------------------------------------------------------

    def fit_text(self, phrases: Sequence[Sequence[str]],
                 values: Sequence[Sequence[float] | None] | None = None) -> list[dict | None]:
        """Fit the generator's (and EMA's) text whitening.

        Parameters
        ----------
        phrases : sequence of sequence of str
            Per field of the generator, its distinct training phrases (more than its dims).
        values : sequence of (sequence of float or None), optional
            Per field, the value each phrase writes where the field is numeric and read out.

        Returns
        -------
        list of dict or None
            Per field, its read-out's fit (None for a whitened field), also kept in
            :attr:`readouts` by field name.
        """
        encodings = [self.encoder.encode(list(p)).to(self.device) for p in phrases]
        tokens = torch.cat([e.tokens[e.mask] for e in encodings])
        reports = self.network.fit_text([e.pooled for e in encodings], tokens, values)
        self.ema.load_state_dict(self.network.state_dict())
        self._conditions.clear()
        self.readouts = {f: r for f, r in zip(self.network.fields, reports, strict=True) if r}
        return reports

    @torch.no_grad()
    def fit_levels(self, rows: int) -> None:
        """Fit the label levels (generator and EMA) once, in closed form
        (:func:`cfx.models.training.levels.fit_levels` on the whitened fields), over ``rows``
        rows of the source, whole subjects where it gives them, a fixed cohort's equally often
        (:func:`cfx.models.training.levels.level_draw`), drawn with a generator of its own
        (``seed + 1``): the run's data and noise are untouched, and every process of a
        data-parallel run fits the same levels. Call before :meth:`calibrate_output`."""
        generator = self.network
        rng = np.random.default_rng(self.settings.seed + 1)
        next_batch, rows = level_draw(self.source, rng, rows, self.settings.batch_size)

        def draw():
            batch = next_batch()
            labels, real = self._tensors(batch)
            return self._condition(batch.phrases).pooled, labels, real

        weight, bias = fit_levels(draw, rows)
        for network in (generator, self.ema):
            network.label_levels.weight.copy_(weight.to(network.label_levels.weight.device))
            network.label_levels.bias.copy_(bias.to(network.label_levels.bias.device))

    @torch.no_grad()
    def calibrate_output(self, batch: TrainingBatch) -> None:
        """Start the generator's output at the mean intensity of ``batch`` less its level map
        (a data-dependent initialisation of the last bias: the network then learns structure,
        not the offset)."""
        labels, real = self._tensors(batch)
        if self.network.label_levels is not None:
            shift = self.network.label_levels(self._condition(batch.phrases).pooled)
            real = real - torch.einsum("nl,nlxyz->nxyz", shift, labels)[:, None]
        for network in (self.network, self.ema):
            network.head.bias.fill_(float(real.mean()))

    def _tensors(self, batch: TrainingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_tensors(self.network, batch, self.device)

    def _condition(self, phrases: Sequence[Mapping[str, str]]) -> TextCondition:
        return TextCondition.stack([self._conditions(row) for row in phrases])

    # -- one step -----------------------------------------------------------------------------

    def _discriminate(self, image: torch.Tensor, labels: torch.Tensor,
                      condition: TextCondition) -> list[torch.Tensor]:
        text = condition.pooled[:, :, None, None, None].expand(-1, -1, *image.shape[2:])
        return self._discriminator(torch.cat([image, labels, text], dim=1))[-1:]

    def train_step(self) -> dict[str, float]:
        """One discriminator and one generator update.

        Returns
        -------
        dict of str to float
            ``l1`` (HU); ``region`` and ``edit`` (HU) when weighted; ``adversarial_g``,
            ``adversarial_d`` and the total gradient norm of each network before clipping,
            ``grad_norm_g`` and ``grad_norm_d`` (the discriminator's values only when
            ``settings.adversarial_weight > 0``).
        """
        settings, generator = self.settings, self.network
        batch = self.source(self.rng, settings.batch_size)
        labels, real = self._tensors(batch)
        condition = self._condition(batch.phrases)
        rows = settings.batch_size  # noise is drawn for the whole batch, this process's rows kept
        noise = torch.randn((rows, *real.shape[1:]), generator=self.noise)[self.rows]
        noise = noise.to(self.device)
        vector = torch.randn(rows, generator.noise_dims,
                             generator=self.noise)[self.rows].to(self.device)
        adversarial = settings.adversarial_weight > 0
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            fake = self._generator(labels, noise, condition, vector)
        if adversarial:
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self._autocast):
                loss_d = 0.5 * (
                    self.adversarial(self._discriminate(real, labels, condition), True, True)
                    + self.adversarial(self._discriminate(fake.detach(), labels, condition),
                                       False, True))
            self.optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            norm_d = torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(),
                                                    settings.clip_norm)
            self.optimizer_d.step()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
            loss_l1 = (fake.float() - real).abs().mean()
            loss_g = settings.l1_weight * loss_l1
            if settings.region_weight > 0:
                loss_region = region_mean_error(fake.float(), real, labels)
                loss_g = loss_g + settings.region_weight * loss_region
            if settings.edit_weight > 0:
                swapped = condition.select(torch.roll(torch.arange(len(condition)), 1))
                loss_edit = (self._generator(labels, noise, swapped, vector).float()
                             - fake.float()).abs().mean()
                loss_g = loss_g + settings.edit_weight * loss_edit
            if adversarial:
                loss_adv = self.adversarial(self._discriminate(fake, labels, condition), True,
                                            False)
                loss_g = loss_g + settings.adversarial_weight * loss_adv
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        norm_g = torch.nn.utils.clip_grad_norm_(generator.parameters(), settings.clip_norm)
        self.optimizer_g.step()
        with torch.no_grad():
            text_lr = self.optimizer_g.param_groups[1]["lr"]
            if settings.gate_decay > 0:
                for gate in generator.gates():
                    gate.mul_(1 - settings.gate_decay * text_lr)
            if settings.film_decay > 0:
                for weight in generator.film_text_weights():
                    weight.mul_(1 - settings.film_decay * text_lr)
            for average, current in zip(self.ema.parameters(), generator.parameters(),
                                        strict=True):
                average.lerp_(current, 1 - settings.ema_decay)
        self.step += 1
        half_window = (generator.hu_window[1] - generator.hu_window[0]) / 2
        losses = {"l1": loss_l1.item() * half_window, "grad_norm_g": norm_g.item()}
        if settings.region_weight > 0:
            losses["region"] = loss_region.item() * half_window
        if settings.edit_weight > 0:
            losses["edit"] = loss_edit.item() * half_window
        if adversarial:
            losses.update(adversarial_g=loss_adv.item(), adversarial_d=loss_d.item(),
                          grad_norm_d=norm_d.item())
        return average_values(losses) if self._distributed else losses

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate of every parameter group of both optimisers by
        ``factor`` (kept in :meth:`training_state`)."""
        for _, optimizer in self._optimizers_by_name():
            for group in optimizer.param_groups:
                group["lr"] *= factor

    # -- resume -------------------------------------------------------------------------------

    def _modules_by_prefix(self):
        return (("generator", self.network), ("ema", self.ema),
                ("discriminator", self.discriminator))

    def _optimizers_by_name(self):
        return (("optimizer_g", self.optimizer_g), ("optimizer_d", self.optimizer_d))

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resume needs, as tensors (for safetensors) and JSON.

        Returns
        -------
        tensors : dict of str to Tensor
            ``generator.*``, ``ema.*``, ``discriminator.*``, ``optimizer_g.*``,
            ``optimizer_d.*`` and ``rng.noise`` (the torch generator's state).
        meta : dict
            ``step``, the numpy generator's state, the optimisers' hyper-parameters and
            the settings.
        """
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self._modules_by_prefix():
            tensors.update(module_tensors(prefix, module))
        meta = {"step": self.step, "rng": rng_json(self.rng), "settings": asdict(self.settings)}
        for name, optimizer in self._optimizers_by_name():
            state, meta[name] = optimizer_tensors(name, optimizer)
            tensors.update(state)
        tensors["rng.noise"] = self.noise.get_state()
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore :meth:`training_state` (same architecture and settings)."""
        for prefix, module in self._modules_by_prefix():
            load_module(prefix, module, tensors)
        for name, optimizer in self._optimizers_by_name():
            load_optimizer(name, optimizer, tensors, meta[name], self.device)
        self.rng.bit_generator.state = meta["rng"]
        self.noise.set_state(tensors["rng.noise"])
        self.step = int(meta["step"])
        self._conditions.clear()

