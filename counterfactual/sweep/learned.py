"""The sweep's view of a learned checkpoint (``--model NAME|DIR``).

:class:`LearnedGenerator` implements the ``CounterfactualGenerator`` protocol for a GAN
checkpoint folder written by ``cfx train``: it checks masks and the text encoder against what the
model was trained with, encodes each distinct field phrase once, draws the noise once per
(subject, seed) from the sweep's seed, and runs every value of the group with that same noise,
window by window (windows of :data:`WINDOW_SCALE` times the training patch, Gaussian-blended)
over larger volumes.

:class:`LearnedDiffusionGenerator` does the same for a diffusion checkpoint: every value of a
group is sampled by the checkpoint's sampler (its ``sampling`` block names it; DDIM) from the
same noise (initial and per step), with the sweep's ``--steps``, ``--guidance`` and ``--eta``,
from noise or (``--from-ct``) from the subject's CT noised to ``--strength``. Its windows are
:data:`WINDOW_SCALE` times the training patch too: the UNet normalises over (GroupNorm), and
attends across, the window it sees, so windows of the training patch itself would see what
training saw, but they cost 7.6 times a whole-volume pass at 64³ (27 overlapping 32³ windows per
step, measured on CPU).

Both are siblings over :class:`LearnedModel` (loading, devices, text encoder, checks), each
naming its architecture from the registry (:mod:`cfx.models.architectures`) and running volumes
through that architecture's ``Runner``. :func:`learned_generator` picks the class serving the
checkpoint's architecture (:data:`SERVED`, filled by subclassing :class:`LearnedModel`).

A checkpoint trained with ``--body`` (its config's ``body`` block) reads one more label channel,
the body outline: from the subject's CT when the cohort has one, else drawn around the lungs by
the block's stated rule (:func:`cfx.analysis.controls.synthetic_body`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cfx.analysis.controls import body_outline, synthetic_body
from cfx.counterfactual.checkpoint_fields import check_served_config
from cfx.counterfactual.cohort import Cohort, Subject
from cfx.counterfactual.errors import UserInputError
from cfx.counterfactual.labels import LabelVocabulary
from cfx.counterfactual.sweep.catalog import BUNDLED_DIR, bundled_models, find_checkpoint
from cfx.counterfactual.sweep.request import Request, SamplingOptions
from cfx.counterfactual.training_data import label_channels, with_body
from cfx.counterfactual.volume import Volume, check_same_grid, read_volume
from cfx.models.architectures import ARCHITECTURES, Architecture, implementation
from cfx.models.checkpoint import CheckpointError, load_generator, read_config, sampling_block
from cfx.models.samplers import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from cfx.models.sampling import check_sampling
from cfx.models.text import HFTextEncoder, RecordConditions, TextEncoderLoadError

__all__ = ["LearnedModel", "LearnedGenerator", "LearnedDiffusionGenerator", "learned_generator",
           "SERVED", "BUNDLED_DIR", "bundled_models", "find_checkpoint", "DEFAULT_STRENGTH"]

WINDOW_SCALE = 2  # sliding-window side / training patch side
DEFAULT_STRENGTH = 0.6  # --from-ct without --strength (phantom-diffusion-32 keeps 1.04 of smoking)
SERVED: dict[str, type[LearnedModel]] = {}
"""Checkpoint architecture name -> the class serving it to the sweep."""


def learned_generator(folder: str | os.PathLike,
                      sampling: SamplingOptions | None = None) -> LearnedModel:
    """The sweep's generator for a checkpoint folder, by its architecture (:data:`SERVED`):
    diffusion checkpoints take ``sampling``, for any other it must be empty.

    Raises
    ------
    UserInputError
        Not a checkpoint, or sampling options for a GAN (before any weight is read).
    """
    sampling = sampling or SamplingOptions()
    try:
        config = read_config(folder)
    except CheckpointError as exc:
        raise UserInputError(f"--model: {exc}") from None
    check_served_config(config, f"--model: {Path(folder) / 'config.json'}")
    return SERVED[config["architecture"]].serve(folder, config, sampling)


class LearnedModel:
    """What every ``cfx train`` checkpoint serving the sweep shares: the network loaded on the
    CPU, its text encoder loaded once, its label vocabulary, windows of :data:`WINDOW_SCALE`
    times the training patch, and the checks of a cohort. A subclass names its
    ``architecture`` (registers it in :data:`SERVED`) and defines ``generate``.

    Parameters
    ----------
    folder : path
        Checkpoint folder.
    device : str
        ``cpu`` or ``cuda``; the sweep's executor may change it through :meth:`configure`.

    Raises
    ------
    UserInputError
        Not a checkpoint folder, a pickle, unreadable weights, or another architecture than
        :attr:`architecture` (one line).
    """

    architecture: Architecture
    kind = "a learned model"  # how a refusal of sampling options names it

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        SERVED[cls.architecture.checkpoint] = cls

    @classmethod
    def serve(cls, folder: str | os.PathLike, config: dict,
              sampling: SamplingOptions) -> LearnedModel:
        """This class for ``folder`` (``config``: its ``config.json``), refusing ``sampling``
        options (a subclass that samples overrides this)."""
        sampling.refuse(str(config.get("name", Path(folder).name)),
                        f"{cls.kind} ({config['architecture']})")
        return cls(folder)

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        try:
            loaded = load_generator(folder, "cpu")
        except CheckpointError as exc:
            raise UserInputError(f"--model: {exc}") from None
        if loaded.config["architecture"] != self.architecture.checkpoint:
            raise UserInputError(f"--model: {folder} holds a {loaded.config['architecture']} "
                                 f"model; {type(self).__name__} serves "
                                 f"{self.architecture.checkpoint}")
        self.folder = Path(folder)
        self.config = loaded.config
        self.model = loaded.generator
        self.name = str(self.config.get("name", self.folder.name))
        self.content_hash = loaded.content_hash
        encoder = self.config["text_encoder"]
        self.text_encoder = encoder["identifier"]
        # windows twice the training patch: the network is fully convolutional, and bigger
        # windows mean fewer of them and fewer borders padded with zeros
        self.roi = tuple(WINDOW_SCALE * p for p in self.config["training"]["arguments"]["patch"])
        labels = self.config["labels"]
        self.vocabulary = LabelVocabulary({int(k): v for k, v in labels["labels"].items()},
                                          {k: tuple(v) for k, v in labels["regions"].items()})
        self.body = self.config.get("body")  # None: the model reads no body channel
        self.window_batch = 1
        self.device = torch.device(device)
        self._conditions: RecordConditions | None = None
        self._implementation = implementation(self.architecture)
        self._window_seconds: dict[tuple[int, ...], float] = {}

    def configure(self, device: str = "cpu", batch_size: int = 1) -> None:
        """Run on ``device`` with ``batch_size`` windows per forward pass."""
        self.device = torch.device(device)
        self.window_batch = max(1, int(batch_size))
        self.model.to(self.device)
        self._conditions = None
        self._window_seconds = {}

    def projected_seconds(self, shape: Sequence[int], requests: Sequence[Request]) -> float:
        """Projected seconds of one group (``requests`` on a volume of ``shape``): the network
        passes of its runner times one pass over one window, timed once per window size."""
        runner = self._runner()
        window, passes = runner.passes(shape, self.roi, len(requests))
        if window not in self._window_seconds:
            condition = runner.conditions([self._records()(requests[0].phrases)])
            self._window_seconds[window] = runner.time_window(window, condition, self.device)
        return passes * self._window_seconds[window]

    def _records(self) -> RecordConditions:
        """Load the checkpoint's text encoder once (it must have the stored width) and read each
        distinct record once."""
        if self._conditions is None:
            stored = self.config["text_encoder"]
            try:
                encoder = HFTextEncoder(stored["name"], max_length=stored["max_length"],
                                        device=self.device)
            except TextEncoderLoadError as exc:
                raise UserInputError(f"--model {self.name}: its text encoder cannot be loaded "
                                     f"({exc})") from None
            if encoder.width != stored["width"]:
                raise UserInputError(f"--model {self.name}: text encoder {stored['name']!r} "
                                     f"gives {encoder.width}-d embeddings but the model was "
                                     f"trained on {stored['width']}-d ones")
            self._conditions = RecordConditions(self.model, encoder)
        return self._conditions

    def check(self, cohort: Cohort, attribute: str) -> None:
        """The model must read ``attribute``, the cohort's labels must be the model's, and its
        text encoder must load."""
        from cfx.counterfactual.volume import read_labels

        if attribute not in self.model.fields:
            raise UserInputError(f"--attribute {attribute}: model {self.name} was not trained "
                                 f"to read it (its fields: {', '.join(self.model.fields)}); "
                                 "sweep one of those or train a model on records that vary it")
        for subject in cohort.subjects:
            read_labels(subject.mask, self.vocabulary)
        self._records()

    def _labels(self, mask: Volume, subject: Subject, ct: Volume | None = None) -> torch.Tensor:
        """The mask as one-hot label channels, shape (1, C, X, Y, Z), on the device; for a
        model reading the body, with the body of ``ct`` (on the mask's grid), else of the
        subject's CT, else drawn around the lungs."""
        channels = label_channels(mask.data, self.vocabulary)
        if self.body is not None:
            if ct is None and subject.ct is not None:
                ct = read_volume(subject.ct)
                check_same_grid(mask, ct)
            body = (body_outline(ct.data, mask.data, air_hu=self.body["air_hu"])
                    if ct is not None else
                    synthetic_body(mask.data, mask.spacing, margin_mm=self.body["margin_mm"]))
            channels = with_body(channels, body, self.vocabulary)
        # float32 from the start: an int64 one-hot is 2.7 GB at 512² x 320 before conversion
        labels = torch.zeros((1, self.model.config["label_channels"], *channels.shape))
        labels[0].scatter_(0, torch.from_numpy(channels)[None], 1.0)
        return labels.to(self.device)


class LearnedGenerator(LearnedModel):
    """A ``cfx train`` GAN checkpoint serving the sweep (parameters and errors as
    :class:`LearnedModel`)."""

    architecture = ARCHITECTURES["gan"]
    kind = "a GAN"

    def _runner(self):
        return self._implementation.Runner(self.model)

    def generate(self, subject: Subject, mask: Volume, attribute: str,
                 requests: Sequence[Request], seed: int,
                 ct: Volume | None = None) -> list[np.ndarray]:
        """One float32 HU volume on the mask's grid per request, all from one noise draw
        (``ct``: the subject's CT on the mask's grid, for a model reading the body; read when
        not given)."""
        # 1. each request read on its own (a volume must not depend on which other values share
        #    its group), each distinct phrase encoded once
        records = self._records()
        runner = self._runner()
        condition = runner.conditions([records(r.phrases) for r in requests])
        # 2. the label map as channels; 3. every request with the noise of this seed
        volumes = runner.run(self._labels(mask, subject, ct), condition, mask.shape, seed,
                             self.roi, self.window_batch)
        return [v.cpu().numpy().astype(np.float32, copy=False) for v in volumes]


class LearnedDiffusionGenerator(LearnedModel):
    """A ``cfx train --arch diffusion`` checkpoint serving the sweep.

    Parameters
    ----------
    folder : path
        Checkpoint folder.
    device : str
        ``cpu`` or ``cuda``; see :meth:`configure`.
    sampling : SamplingOptions, optional
        Unset options take the checkpoint's ``sampling`` defaults; ``strength`` defaults to
        :data:`DEFAULT_STRENGTH` with ``from_ct``.

    Raises
    ------
    UserInputError
        As :class:`LearnedModel`, or a sampling option out of range (one line, from the
        model's own check, :func:`cfx.models.sampling.check_sampling`, and its sampler's).
    """

    architecture = ARCHITECTURES["diffusion"]
    kind = "a diffusion model"

    @classmethod
    def serve(cls, folder: str | os.PathLike, config: dict,
              sampling: SamplingOptions) -> LearnedDiffusionGenerator:
        """This class for ``folder`` with ``sampling``."""
        return cls(folder, sampling=sampling)

    def __init__(self, folder: str | os.PathLike, device: str = "cpu",
                 sampling: SamplingOptions | None = None):
        super().__init__(folder, device)
        options = sampling or SamplingOptions()
        defaults = sampling_block(self.config)
        self.sampler = defaults["sampler"]
        if self.sampler not in SAMPLERS:
            raise UserInputError(f"--model {self.name}: its config.json samples with "
                                 f"{self.sampler!r}, which this cfx does not know (it knows "
                                 f"{', '.join(SAMPLERS)}); update cfx or use another model")
        steps = defaults["steps"] if options.steps is None else options.steps
        guidance = defaults["guidance"] if options.guidance is None else options.guidance
        own = {k: v for k, v in defaults.items() if k not in ("sampler", "steps", "guidance")}
        if options.eta is not None:
            own["eta"] = options.eta
        if options.strength is not None and not options.from_ct:
            raise UserInputError("--strength: applies to --from-ct only; add --from-ct to "
                                 "start from each subject's CT")
        strength = None
        if options.from_ct:
            strength = DEFAULT_STRENGTH if options.strength is None else options.strength
        held = {}
        if options.keep_outside is not None:
            if not options.from_ct:
                raise UserInputError("--keep-outside: holds voxels to each subject's CT; add "
                                     "--from-ct")
            try:
                self.vocabulary.region_labels(options.keep_outside)
            except UserInputError as exc:
                raise UserInputError(f"--keep-outside: {exc}") from None
            held = {"keep_outside": options.keep_outside}
        try:  # the one check of the options: where the model samples
            check_sampling(self.model.config["train_timesteps"], steps, guidance,
                           1.0 if strength is None else strength)
            make_sampler(self.sampler, self.model.noise_schedule, **own)
        except ValueError as exc:
            raise UserInputError(f"--{exc}") from None
        # a DDIM run records no sampler name, as runs did before samplers were named
        named = {} if self.sampler == DEFAULT_SAMPLER else {"sampler": self.sampler}
        self.sampling = {**named, "steps": int(steps), "guidance": float(guidance), **own,
                         "from_ct": options.from_ct, "strength": strength, **held}
        self._options = own

    def _runner(self):
        sampler = make_sampler(self.sampler, self.model.noise_schedule, **self._options)
        return self._implementation.Runner(self.model, sampler, self.sampling["steps"],
                                           self.sampling["guidance"],
                                           self.sampling["strength"] or 1.0)

    def check(self, cohort: Cohort, attribute: str) -> None:
        """As :meth:`LearnedModel.check`; with ``--from-ct`` every subject needs a CT."""
        super().check(cohort, attribute)
        if self.sampling["from_ct"]:
            for subject in cohort.subjects:
                if subject.ct is None:
                    raise UserInputError(f"--from-ct: subject {subject.id} of {cohort.source} "
                                         "has no CT; give a cohort with a CT for every subject "
                                         "or drop --from-ct")

    def generate(self, subject: Subject, mask: Volume, attribute: str,
                 requests: Sequence[Request], seed: int,
                 ct: Volume | None = None) -> list[np.ndarray]:
        """One float32 HU volume on the mask's grid per request, all from one noise draw (and,
        with ``--from-ct``, from the subject's CT: ``ct`` when given, already on the mask's
        grid (:class:`cfx.counterfactual.grid.ResampledGenerator` passes it), else read; a model
        reading the body takes it from that CT too, and a model with label levels reads the
        record the CT shows, the requests' ``source``; with ``--keep-outside REGION`` every
        voxel outside REGION stays the CT's)."""
        # 1. each request's context, its phrases encoded once each
        records = self._records()
        runner = self._runner()
        context = runner.conditions([records(r.phrases) for r in requests])
        shown = requests[0].source if self.sampling["from_ct"] else None
        source = None if shown is None else runner.conditions([records(shown)])
        # 2. the label map and (from a CT) the subject's CT
        if self.sampling["from_ct"] and ct is None:
            ct = read_volume(subject.ct)
        if ct is not None:
            check_same_grid(mask, ct)
        labels = self._labels(mask, subject, ct)
        start = keep = None
        if self.sampling["from_ct"]:
            start = torch.from_numpy(ct.data)[None, None].to(self.device)
        if "keep_outside" in self.sampling:
            inside = np.isin(mask.data, self.vocabulary.region_labels(
                self.sampling["keep_outside"]))
            keep = torch.from_numpy(~inside)[None, None].to(self.device)
        # 3. every request from the noise of this seed
        volumes = runner.run(labels, context, mask.shape, seed, self.roi, self.window_batch,
                             ct=start, keep=keep, source=source)
        return [v.cpu().numpy().astype(np.float32, copy=False) for v in volumes]
