"""What every model family shares: the posterior, the reparameterization and the KL, in one place."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from audiovae.nn.blocks import with_first_bias

if TYPE_CHECKING:
    from audiovae.config.recipe import Recipe


@dataclass
class Posterior:
    """Diagonal Gaussian q(z|x). mean, logvar: (batch, latent_size, latent_frames)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterized draw z = mean + temperature * std * eps, eps ~ N(0, I)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + temperature * torch.exp(0.5 * self.logvar) * eps

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per latent value, in nats: (batch, latent_size, latent_frames).

        0.5 * (mean^2 + var - 1 - log var): zero exactly at the prior (mean 0, logvar 0), positive elsewhere.
        audiovae.priors.base.GaussianPrior.kl is this.
        """
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)


@dataclass
class VAEOutput:
    """One forward pass: the reconstruction (same shape as the input), the posterior and the latent drawn."""

    reconstruction: torch.Tensor
    posterior: Posterior
    latent: torch.Tensor


@dataclass(frozen=True)
class Family:
    """A model family's registry entry: everything the rest of the package needs to know about it.

    config: the frozen dataclass of a recipe's `model:` section (with a `family` field defaulting to `name`);
    build(recipe) -> VAE; check(recipe) raises ConfigError for recipes the family cannot serve; features: the
    input representations it reads (keys of audiovae.data.representations.REPRESENTATIONS); face(net, recipe) -> the
    scriptable module `audiovae export` writes (audiovae.nn.host_faces), or None where the family does not export.
    cpu_bf16: whether bf16 autocast on a CPU with bf16 matrix units pays for its training step, so that
    `train.precision: auto` uses it there (measured per family: docs/benchmarks.md).
    """

    name: str
    config: type
    build: Callable[[Recipe], VAE]
    features: tuple[str, ...]
    check: Callable[[Recipe], None] = lambda recipe: None
    face: Callable[[VAE, Recipe], nn.Module] | None = None
    cpu_bf16: bool = False

    def __post_init__(self):
        if isinstance(self.features, str):  # one name, as families written for 0.1 give it
            object.__setattr__(self, "features", (self.features,))


class VAE(nn.Module):
    """An encoder to a Gaussian posterior and a decoder back, with lengths handled explicitly.

    Subclasses set `hop` (input steps per latent frame), `latent_size`, `input_channels`, and implement
    `encode_frames` / `decode_frames` for inputs whose length is a multiple of `hop`. Inputs are padded with
    `pad_value(x)` (the representation's silence); `frames_see_neighbours` says whether a latent frame's
    output depends on its neighbours, so that chunked synthesis needs context around each chunk.
    """

    hop: int
    latent_size: int
    input_channels: int
    frames_see_neighbours: bool = True

    @staticmethod
    def pad_value(x: torch.Tensor) -> float:
        return 0.0

    @property
    def labels(self) -> int:
        """How many labels a conditional model takes (model.conditional); 0 for an unconditional one."""
        embedding = getattr(self, "label_embedding", None)
        return embedding.labels if embedding is not None else 0

    def encode(self, x: torch.Tensor, label: torch.Tensor | None = None) -> Posterior:
        """x: (batch, channels, time) of any length -> posterior over ceil(time / hop) latent frames.

        The input is zero-padded on the right to a multiple of the hop. label: (batch,) label indices, for a
        conditional model only (families that condition take it in encode_frames and decode_frames).
        """
        self.check_label(label)
        return self.encode_frames(self.pad(x)) if label is None else self.encode_frames(self.pad(x), label=label)

    def decode(self, z: torch.Tensor, length: int | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        """z: (batch, latent_size, frames) -> (batch, channels, frames * hop), cropped to `length` if given."""
        self.check_label(label)
        out = self.decode_frames(z) if label is None else self.decode_frames(z, label=label)
        return out if length is None else out[..., :length]

    def forward(self, x: torch.Tensor, temperature: float = 1.0, label: torch.Tensor | None = None) -> VAEOutput:
        posterior = self.encode(x, label)
        latent = posterior.sample(temperature) if self.training else posterior.mean
        return VAEOutput(self.decode(latent, x.shape[-1], label), posterior, latent)

    def through_encoder(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """self.encoder(x); with a label (batch,), its embedding's bias added after the encoder's first layer."""
        if label is None:
            return self.encoder(x)
        return with_first_bias(self.encoder, x, self.label_embedding.encoder(label)[..., None])

    def through_decoder(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """self.decoder(z); with a label (batch,), its embedding's bias added after the decoder's first layer."""
        if label is None:
            return self.decoder(z)
        return with_first_bias(self.decoder, z, self.label_embedding.decoder(label)[..., None])

    def check_label(self, label: torch.Tensor | None) -> None:
        """ValueError unless a conditional model gets labels and an unconditional one none."""
        if (label is None) != (self.labels == 0):
            raise ValueError("a conditional model needs a label (batch,) of indices" if label is None
                             else "this model is not conditional: it takes no label")

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        remainder = x.shape[-1] % self.hop
        return x if remainder == 0 else nn.functional.pad(x, (0, self.hop - remainder), value=self.pad_value(x))

    @torch.no_grad()
    def context_frames(self, probe: int = 32) -> int:
        """Latent frames on either side that encoding or decoding one frame reaches (0 when frames do not
        see their neighbours), measured: change the middle frame of a probe and see how far the output moves.
        Chunked synthesis keeps this much context around each chunk, so its joins match one pass."""
        if not self.frames_see_neighbours:
            return 0
        like = next(self.parameters())
        if self.training or like.device.type != "cpu" or like.dtype != torch.float32:
            # float32 on the CPU: rounding stays local there (bf16 drops far changes, FFT algorithms spread them)
            return copy.deepcopy(self).float().cpu().eval().context_frames(probe)
        generator = torch.Generator().manual_seed(0)
        frames = 2 * probe + 1
        z = torch.randn(1, self.latent_size, frames, generator=generator).to(like)
        x = 0.1 * torch.randn(1, self.input_channels, frames * self.hop, generator=generator).to(like)
        nudged_z, nudged_x = z.clone(), x.clone()
        nudged_z[..., probe] += 1.0
        nudged_x[..., probe * self.hop : (probe + 1) * self.hop] += 0.1
        out = (self.decode(nudged_z) != self.decode(z)).flatten(0, 1).any(0)  # (steps,)
        moved = torch.nonzero(out).flatten() // (out.shape[-1] // frames)  # the output frames that moved
        latents = (self.encode(nudged_x).mean != self.encode(x).mean).any(1).flatten()
        moved = torch.cat([moved, torch.nonzero(latents).flatten()])
        reach = int((moved - probe).abs().max()) if moved.numel() else 0
        if reach >= probe and probe < 1024:  # it reaches the probe's ends: look further
            return self.context_frames(2 * probe)
        if reach >= probe:
            warnings.warn(f"a latent frame reaches {reach} frames or more; chunked synthesis keeps {reach} of context",
                          stacklevel=2)
        return reach

    def latent_frames(self, length: int) -> int:
        """Latent frames for an input of `length` steps (samples or mel frames)."""
        return -(-length // self.hop)

    def encode_frames(self, x: torch.Tensor) -> Posterior:
        """The family's encoder on x (batch, channels, time), time a multiple of `hop` (encode pads to one)."""
        raise NotImplementedError

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """The family's decoder on z (batch, latent_size, frames): its raw output (batch, channels, frames * hop),
        before decode's cropping (and a causal model's latency compensation)."""
        raise NotImplementedError


class LabelledVAE(VAE):
    """A conditional VAE with its label fixed: the unconditional interface (encode(x), decode(z)), so that synthesis,
    chunking and evaluation run on it unchanged. Holds the model as a submodule, sharing its weights."""

    def __init__(self, net: VAE, label: int):
        super().__init__()
        self.net, self.label = net, label
        self.hop, self.latent_size, self.input_channels = net.hop, net.latent_size, net.input_channels
        self.frames_see_neighbours = net.frames_see_neighbours

    @property
    def labels(self) -> int:
        return 0  # it takes none: it has one

    def _label(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((batch,), self.label, dtype=torch.long, device=like.device)

    def encode(self, x: torch.Tensor, label: torch.Tensor | None = None) -> Posterior:
        self.check_label(label)
        return self.net.encode(x, self._label(x.shape[0], x))

    def decode(self, z: torch.Tensor, length: int | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        self.check_label(label)
        return self.net.decode(z, length, self._label(z.shape[0], z))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.pad(x)

    def latent_frames(self, length: int) -> int:
        return self.net.latent_frames(length)


def split_posterior(stats: torch.Tensor) -> Posterior:
    """(batch, 2 * latent, frames) -> Posterior; log-variance clamped to keep exp() finite."""
    mean, logvar = stats.chunk(2, dim=1)
    return Posterior(mean, logvar.clamp(-30.0, 20.0))
