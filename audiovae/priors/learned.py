"""A learned prior over a run's latent sequences: a causal autoregressive model p(z_t | z_<t), streamed frame by frame.

The VAE is frozen; its posterior means on the train split are the data. Each frame's distribution is a
mixture of K diagonal Gaussians over all latent dims with ONE set of mixture weights per frame: a frame
of audio is in one of a few joint states (silence, a vowel, a fricative ...) in which all dims move
together, and per-dim weights would sample dims from different states (a "half silent, half vowel"
frame the decoder never saw). Inputs are the previous frames, normalized per dim with the train
latents' mean and std (buffers of the module, so they travel in its state dict):

    frames      z_0   z_1   z_2  ...  z_T-1
    inputs      0     z_0   z_1  ...  z_T-2     (0 = the train mean: "no history yet")
    predicts    p(z_0) p(z_1|z_0) ...

Two cores share the interface `forward(inputs) -> features` offline and `step(input, state)` streaming:
"gru" (state: the hidden state) and "conv", a gated dilated causal conv stack whose streaming state is
each layer's cached left context. Either way streaming holds O(1) memory in the generated length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiovae.config.schema import ConfigError, build_dataclass
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint
from audiovae.priors.base import NormalizedLatents, Prior
from audiovae.priors.cores import CORES
from audiovae.priors.flow import FlowPrior
from audiovae.priors.sampler import draws, sample_frames, split_mixture

MIN_LOG_SCALE = -7.0  # of a component's std in normalized units: keeps the NLL finite on repeated frames
Generators = torch.Generator | Sequence[torch.Generator] | None


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


@dataclass(frozen=True)
class PriorConfig:
    """The learned prior's model and its training (the recipe's `prior:` section)."""

    # gru | conv: autoregressive, one frame a step (conv: ties on Frechet, 3x faster sampling, fixed-size state);
    # flow: a causal normalizing flow drawn over all frames at once (audiovae.priors.flow)
    kind: str = "gru"
    hidden_size: int = 256  # GRU hidden units, or conv channels (the flow's: its conditioners')
    layers: int = 2  # GRU layers, or conv layers (dilations 1, 2, 4, ... restarting every `dilation_cycle`)
    kernel_size: int = 3  # conv and flow only
    dilation_cycle: int = 5  # conv and flow only: receptive field 1 + (kernel_size - 1) * sum of dilations
    mixtures: int = 8  # gru and conv: Gaussian components per frame (shared weights across latent dims)
    couplings: int = 8  # flow only: its coupling steps
    group_frames: int = 8  # flow only: latent frames per position (its couplings mix the values of a position)
    dropout: float = 0.1
    # std of noise added to the input frames while training, in normalized units. On the demo corpus 0.1 and
    # 0.3 made 60-s samples linger in silence (quieter, less spread); 0.0 and 0.03 tie on NLL and Frechet.
    input_noise: float = 0.03
    learning_rate: float = 2e-3
    batch_size: int = 32
    sequence_frames: int = 128  # latent frames per training sequence
    max_steps: int = 20000
    max_minutes: float | None = 2.0
    valid_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 25
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _require(self.kind in PRIOR_MODELS, "kind", f"must be one of {', '.join(PRIOR_MODELS)} (got {self.kind!r})")
        _require(self.hidden_size >= 1, "hidden_size", "must be positive")
        _require(self.layers >= 1, "layers", "must be positive")
        _require(self.kernel_size >= 2, "kernel_size", "must be at least 2 (1 sees no history)")
        _require(self.dilation_cycle >= 1, "dilation_cycle", "must be positive")
        _require(self.mixtures >= 1, "mixtures", "must be positive")
        _require(self.couplings >= 1, "couplings", "must be positive")
        _require(self.group_frames >= 1, "group_frames", "must be positive")
        _require(self.kind != "flow" or self.sequence_frames % self.group_frames == 0, "sequence_frames",
                 f"must be a multiple of group_frames ({self.group_frames}) for the flow prior")
        _require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        _require(self.input_noise >= 0, "input_noise", "must be >= 0")
        _require(self.learning_rate > 0, "learning_rate", "must be positive")
        _require(self.batch_size >= 1, "batch_size", "must be positive")
        _require(self.sequence_frames >= 2, "sequence_frames", "must be at least 2")
        _require(self.max_steps >= 1, "max_steps", "must be positive")
        _require(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "must be positive")
        for name in ("valid_every", "checkpoint_every", "log_every"):
            _require(getattr(self, name) >= 1, name, "must be positive")
        _require(self.grad_clip >= 0, "grad_clip", "must be >= 0")

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** (i % self.dilation_cycle) for i in range(self.layers))

    @property
    def receptive_frames(self) -> int | None:
        """Past frames the conv core sees (None: unbounded, the GRU; the flow's reach back is its couplings')."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations) if self.kind == "conv" else None


# ---- cores: normalized frames (batch, latent, frames) -> features (batch, hidden, frames) ----------------
@dataclass
class StreamState:
    """Where a stream stands: the core's state and the last frame (normalized), (B, latent). Advanced in place."""

    core: Any
    previous: torch.Tensor
    label: torch.Tensor | None = None  # a conditional prior's label (B,), fixed for the stream


class LatentPrior(NormalizedLatents):
    """p(z) over latent sequences z: (batch, latent_size, frames), in the VAE's latent units."""

    def __init__(self, config: PriorConfig, latent_size: int, labels: int = 0):
        """labels: a conditional prior's label count: a learned embedding per label is added to every input frame
        (the first one included, so the label decides where a sound starts)."""
        super().__init__(latent_size)
        self.config = config
        self.core = CORES[config.kind](config, latent_size)
        k = config.mixtures
        self.head = nn.Linear(config.hidden_size, k + 2 * k * latent_size)  # logits, means, log scales
        self.label_embedding = nn.Embedding(labels, latent_size) if labels else None  # built last: same weights

    @property
    def labels(self) -> int:
        return self.label_embedding.num_embeddings if self.label_embedding is not None else 0

    def conditioned(self, inputs: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """Normalized input frames (batch, latent[, frames]) with the label's embedding added (conditional priors)."""
        if (label is None) != (self.label_embedding is None):
            raise ValueError("a conditional prior needs a label (batch,)" if label is None
                             else "this prior is not conditional: it takes no label")
        if label is None:
            return inputs
        embedded = self.label_embedding(label.to(inputs.device))  # (batch, latent)
        return inputs + (embedded[..., None] if inputs.dim() == 3 else embedded)

    def mixture(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (..., H) -> logits (..., K), means and log scales (..., K, latent), normalized units."""
        return split_mixture(self.head(features), self.config.mixtures, self.latent_size, MIN_LOG_SCALE)

    def log_prob(self, z: torch.Tensor, input_noise: float = 0.0, generator: torch.Generator | None = None,
                 label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z_t | z_<t) in nats, summed over latent dims: (batch, frames). z: (batch, latent, frames);
        label: (batch,) label indices, for a conditional prior only."""
        x = self.normalize(z)
        inputs = F.pad(x[..., :-1], (1, 0))  # shifted right: frame t sees frames < t
        if input_noise > 0:
            inputs = inputs + input_noise * torch.randn(inputs.shape, generator=generator).to(inputs.device)
        inputs = self.conditioned(inputs, label)
        logits, means, log_scales = self.mixture(self.core(inputs).transpose(1, 2))  # (B, T, K[, D])
        target = x.transpose(1, 2)[:, :, None]  # (B, T, 1, D)
        component = (-0.5 * ((target - means) * torch.exp(-log_scales)).square() - log_scales
                     - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p = torch.logsumexp(torch.log_softmax(logits, -1) + component, -1)
        return log_p - self.latent_std.log().sum()  # back to the VAE's units (change of variables)

    @torch.no_grad()
    def nll(self, z: torch.Tensor, label: torch.Tensor | None = None) -> float:
        """Mean negative log-likelihood in nats per frame (summed over latent dims). z: (batch, latent, frames)."""
        was_training = self.training
        self.eval()
        value = -self.log_prob(z, label=label).mean().item()
        self.train(was_training)
        return value

    # ---- streaming ------------------------------------------------------------------------------------------
    def initial_state(self, batch: int, label: torch.Tensor | None = None) -> StreamState:
        """The state before any frame: no history (the train mean); a conditional prior's label (batch,)."""
        device = self.latent_mean.device
        return StreamState(self.core.initial_state(batch, device), torch.zeros(batch, self.latent_size, device=device),
                           None if label is None else label.to(device))

    @torch.no_grad()
    def prime(self, z_prompt: torch.Tensor, state: StreamState | None = None,
              label: torch.Tensor | None = None) -> StreamState:
        """Consume a prompt's latents (batch, latent, frames), frame by frame; returns the state to continue from."""
        was_training = self.training
        self.eval()
        state = state or self.initial_state(z_prompt.shape[0], label)
        for frame in self.normalize(z_prompt).unbind(-1):
            _, state.core = self.core.step(self.conditioned(state.previous, state.label), state.core)
            state.previous = frame
        self.train(was_training)
        return state

    def sample_stream(self, batch: int, frames: int, temperature: float = 1.0, generator: Generators = None,
                      chunk_frames: int = 256, state: StreamState | None = None,
                      label: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Yield latent chunks (batch, latent, <= chunk_frames) totalling `frames`, in the VAE's units.

        temperature scales each component's std and divides the mixture logits; 0 takes the likeliest
        component's mean. Each frame draws one uniform (component) and `latent` normals per row, from
        `generator` or, given a sequence, row i from generator[i], so neither chunk_frames nor the batch
        size changes a row's samples. `state` (e.g. from `prime`) is advanced in place. Between chunks
        the stream holds only `state`: memory does not grow with `frames`. label: (batch,), a conditional prior's.
        """
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not isinstance(generator, torch.Generator | None) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}")
        state = state or self.initial_state(batch, label)
        for start in range(0, frames, chunk_frames):
            yield self._sample_chunk(state, min(chunk_frames, frames - start), temperature, generator)

    @torch.no_grad()
    def _sample_chunk(self, state: StreamState, frames: int, temperature: float,
                      generator: Generators) -> torch.Tensor:
        """The next `frames` frames (batch, latent, frames) in the VAE's units; advances `state`. Each frame draws
        one uniform (its component) and `latent` normals per row, drawn here for the whole chunk in that order;
        the frames run in TorchScript (audiovae.priors.sampler), the same operations as the core's `step`."""
        was_training = self.training
        self.eval()
        device = state.previous.device
        uniforms, normals = draws(generator, state.previous.shape[0], frames, self.latent_size)  # on the CPU
        embedding = self.conditioned(torch.zeros_like(state.previous), state.label)  # checks the label is right
        offset = None if state.label is None else embedding  # None: the operations of an unconditional prior
        chunk, state.previous, state.core = sample_frames(
            self.core, self.head, state.previous, state.core, uniforms.to(device), normals.to(device), temperature,
            self.config.mixtures, MIN_LOG_SCALE, offset)
        self.train(was_training)
        return chunk * self.latent_std[:, None] + self.latent_mean[:, None]


PRIOR_MODELS: dict[str, type[nn.Module]] = {"gru": LatentPrior, "conv": LatentPrior, "flow": FlowPrior}
"""prior.kind -> the model: each takes (config, latent_size, labels) and offers LatentPrior's methods."""
PriorModel = LatentPrior | FlowPrior


class LearnedPrior(Prior):
    """The `Prior` interface over a trained LatentPrior: sampling streams it; there is no closed-form KL."""

    name = "learned"

    def __init__(self, model: PriorModel, chunk_frames: int = 256, unchecked: str | None = None,
                 label: int | None = None):
        """unchecked: why it could not be matched to its VAE (a 0.1/0.2 prior), said where it is used. label: the
        label a conditional prior draws under (with_label)."""
        self.model = model
        self.chunk_frames = chunk_frames
        self.unchecked = unchecked
        self.label = label

    def with_label(self, label: int) -> LearnedPrior:
        """This conditional prior drawing under one label (an index into the run's model.labels)."""
        return LearnedPrior(self.model, self.chunk_frames, self.unchecked, label)

    def _labels(self, batch: int) -> torch.Tensor | None:
        return None if self.label is None else torch.full((batch,), self.label, dtype=torch.long)

    def sample(self, shape: tuple[int, int, int], temperature: float = 1.0,
               generator: Generators = None) -> torch.Tensor:
        """Latents (batch, latent_size, frames), streamed chunk by chunk; one generator per row makes row i
        independent of the batch size (as `generate` promises with seed + i)."""
        batch, latent_size, frames = shape
        if latent_size != self.model.latent_size:
            raise ValueError(f"this prior models {self.model.latent_size} latent dims, not {latent_size}")
        chunks = list(self.model.sample_stream(batch, frames, temperature, generator, self.chunk_frames,
                                               label=self._labels(batch)))
        return torch.cat(chunks, -1) if chunks else torch.zeros(shape, device=self.model.latent_mean.device)

    def sample_stream(self, batch: int, latent_size: int, frames: int, temperature: float = 1.0,
                      generator: Generators = None, chunk_frames: int = 256, prompt: torch.Tensor | None = None
                      ) -> Iterator[torch.Tensor]:
        """Latent chunks (batch, latent_size, <= chunk_frames) totalling `frames`, continuing `prompt`
        (batch, latent_size, frames) when given; memory does not grow with `frames`."""
        if latent_size != self.model.latent_size:
            raise ValueError(f"this prior models {self.model.latent_size} latent dims, not {latent_size}")
        label = self._labels(batch)
        state = self.model.prime(prompt.to(self.model.latent_mean.device), label=label) if prompt is not None else None
        return self.model.sample_stream(batch, frames, temperature, generator, chunk_frames, state, label)

    def nll(self, z: torch.Tensor) -> float:
        return self.model.nll(z.to(self.model.latent_mean.device), self._labels(z.shape[0]))

    def kl(self, posterior):
        raise NotImplementedError("the learned prior is fit after the VAE; the VAE's KL stays against N(0, I)")


# ---- training -----------------------------------------------------------------------------------------------
def build_prior(config: PriorConfig, latent_size: int, train_latents: Sequence[np.ndarray] | None = None,
                labels: int = 0) -> PriorModel:
    """The prior for `latent_size` dims (conditioned on `labels` labels when > 0), seeded by config.seed; normalized
    on train_latents when given."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        prior = PRIOR_MODELS[config.kind](config, latent_size, labels)
    if train_latents is not None:
        prior.set_normalization(train_latents)
    return prior


def prior_loss(prior: PriorModel, batch_z: torch.Tensor, generator: torch.Generator | None = None,
               label: torch.Tensor | None = None) -> torch.Tensor:
    """Training loss: NLL in nats per frame with config.input_noise on the inputs. batch_z: (batch, latent, frames)."""
    return -prior.log_prob(batch_z, prior.config.input_noise, generator, label).mean()


def checkpoint_state(prior: PriorModel) -> dict[str, Any]:
    """What a checkpoint holds: plain config, latent size, weights (normalization buffers included)."""
    return {"prior_config": dataclasses.asdict(prior.config), "latent_size": prior.latent_size,
            "prior": prior.state_dict()}


def prior_from_checkpoint(state: dict[str, Any]) -> PriorModel:
    """Rebuild a learned prior from `checkpoint_state` output (e.g. after torch.load(weights_only=True)), or from
    a run's RUN/prior/*.pt, whose weights are the training state's `model`."""
    config = build_dataclass(PriorConfig, state["prior_config"], "prior")  # checked like a recipe's section
    weights = state["prior"] if "prior" in state else state["model"]
    embedding = weights.get("label_embedding.weight")  # a conditional prior's: (labels, latent)
    prior = PRIOR_MODELS[config.kind](config, int(state["latent_size"]),
                                      0 if embedding is None else int(embedding.shape[0]))
    prior.load_state_dict(weights)
    return prior.eval()


class PriorMismatch(UserError):
    """A run's learned prior was trained on another VAE than the one loaded."""


def load_learned_prior(path: Path | None, device: torch.device, vae_weights_sha256: str | None = None,
                       latent_size: int | None = None) -> LearnedPrior | None:
    """The learned prior saved at `path` (a run's prior/best.pt, else last.pt: RunFolder.prior), or None.

    PriorMismatch when it records another VAE's weights (`vae_weights_sha256`, written by train-prior) or another
    latent size than `latent_size`; a prior from before 0.3, which records no VAE, carries `unchecked` (the warning
    generate and export print when they use it)."""
    if path is None:
        return None
    state = load_checkpoint(path)
    try:
        prior = prior_from_checkpoint(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise UserError(f"{path}: not a learned prior of this run ({str(error).splitlines()[0][:120]}); "
                        "train it again with audiovae train-prior") from None
    stored = state.get("vae_weights_sha256")
    retrain = "train it again with audiovae train-prior RUN, or pass --prior gaussian"
    if latent_size is not None and prior.latent_size != latent_size:
        raise PriorMismatch(f"{path}: this learned prior draws {prior.latent_size} latent values per frame but the "
                            f"VAE has {latent_size}: it belongs to another model; {retrain}")
    if vae_weights_sha256 is not None and stored is not None and stored != vae_weights_sha256:
        raise PriorMismatch(f"{path}: this learned prior was trained on another VAE (weights {stored[:12]}, this "
                            f"one {vae_weights_sha256[:12]}); {retrain}")
    unchecked = None
    if vae_weights_sha256 is not None and stored is None:
        unchecked = (f"{path}: this learned prior does not record which VAE it was trained on (made before "
                     "audiovae 0.3), so it is used unchecked; audiovae train-prior RUN records it")
    return LearnedPrior(prior.eval().to(device), unchecked=unchecked)
