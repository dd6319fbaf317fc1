"""A learned prior drawn in parallel over time: a causal normalizing flow over latent sequences (`prior.kind: flow`).

The autoregressive priors (audiovae.priors.learned) draw one frame after another, and at batch 1 their sequential
steps are most of `generate`'s time. This one maps N(0, I) noise to latents through invertible layers whose every
operation runs over all frames at once, so a 10-s sound's latents cost a few milliseconds. Frames are grouped
`group_frames` at a time into positions of group_frames x latent values (a "squeeze"):

    frames     z_0 z_1 ... z_7 | z_8 ... z_15 | ...     (latent, frames), normalized per dim
    positions  [    p_0        |     p_1      | ...]    (group_frames * latent, positions)

and each of `couplings` steps is an ActNorm, an invertible 1x1 mix of a position's values and an affine coupling
(Glow): the second half of the values is scaled and shifted by a function of the first half, computed by gated
dilated convolutions that look at the current and earlier positions only. The whole map is causal in time, so
position p of the latents depends on the noise of positions <= p alone. That gives three things an
autoregressive prior gives: exact log-likelihoods (the training loss), streaming with O(1) state (each
convolution's cached left context) and continuation of a prompt (its latents run forward through the flow to
fill those caches; the new positions' noise is then exactly p(next | prompt)). A prompt that ends inside a
position is completed by repeating its last frame.

No mixture: a coupling flow bends one Gaussian into the data's shape rather than picking among modes, so its
likelihood per frame sits a little under the GRU's, but its samples keep their level over long sounds (nothing
feeds back) and it samples ~10x faster (docs/quality.md, "A prior drawn in parallel").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.errors import UserError
from audiovae.priors.base import NormalizedLatents

if TYPE_CHECKING:
    from audiovae.priors.learned import PriorConfig

# frames drawn at a time (as whole positions), whatever the chunk asked for, so any chunk size gives the same numbers;
# a draw costs ~300 dispatched operations whatever its length, and 640 frames hold a 10-s sound at 62.5 frames a second
DRAW_FRAMES = 640
MAX_LOG_SCALE = 2.0  # a coupling's per-value log scale is bounded to (-2, 2) by a tanh: no step can explode
Generators = torch.Generator | Sequence[torch.Generator] | None


class Conditioner(nn.Module):
    """x_a (B, P, Ca) -> shift and raw log scale (B, P, 2 Cb), each position from positions <= it: a causal conv,
    then gated residual layers of dilated causal convs; the output layer starts near zero (the step near the
    identity). Positions run channels-last and each conv is one matrix product over its kernel's taps stacked as
    channels: torch runs a dilated conv1d on a CPU through an unvectorized path (10x slower here, backward too)."""

    def __init__(self, channels_in: int, channels_out: int, config: PriorConfig):
        super().__init__()
        width, self.kernel = config.hidden_size, config.kernel_size
        self.dilations = config.dilations
        self.input = nn.Linear(self.kernel * channels_in, width)  # over the taps, tap-major
        self.gates = nn.ModuleList(nn.Linear(self.kernel * width, 2 * width) for _ in self.dilations)
        self.residuals = nn.ModuleList(nn.Linear(width, width) for _ in self.dilations)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(width, 2 * channels_out)
        nn.init.normal_(self.output.weight, std=1e-3)  # near zero: each step starts near the identity
        nn.init.zeros_(self.output.bias)
        self.context = [self.kernel - 1] + [(self.kernel - 1) * d for d in self.dilations]  # left context, positions

    def initial_state(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """Zero left context for each conv, (B, context, channels): what training pads with."""
        widths = [self.input.in_features // self.kernel] + [g.in_features // self.kernel for g in self.gates]
        return [torch.zeros(batch, n, c, device=device) for c, n in zip(widths, self.context, strict=True)]

    def _taps(self, cache: torch.Tensor, x: torch.Tensor, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel's taps of x (B, P, C) after cache (B, context, C): (B, P, kernel * C), and the next cache."""
        window = torch.cat([cache, x], 1)
        positions = x.shape[1]
        taps = torch.cat([window[:, i * dilation : i * dilation + positions] for i in range(self.kernel)], -1)
        return taps, window[:, window.shape[1] - cache.shape[1]:]

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, P, Ca) after the positions held in `state` -> (B, P, 2 Cb) and the next state."""
        taps, cache = self._taps(state[0], x, 1)
        following = [cache]
        h = self.input(taps)
        for i, (gate, residual) in enumerate(zip(self.gates, self.residuals, strict=True)):
            taps, cache = self._taps(state[i + 1], h, self.dilations[i])
            following.append(cache)
            a, b = gate(taps).chunk(2, -1)
            h = h + residual(self.dropout(torch.tanh(a) * torch.sigmoid(b)))
        return self.output(h), following


class Coupling(nn.Module):
    """ActNorm, an invertible 1x1 mix, an affine coupling: (B, P, C) -> (B, P, C), log|det| per row."""

    def __init__(self, channels: int, config: PriorConfig):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.mix = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])  # orthogonal: log|det| 0
        self.half = channels // 2
        self.conditioner = Conditioner(self.half, channels - self.half, config)
        self._inverse: torch.Tensor | None = None  # mix's inverse, kept while the weights cannot change
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_inverse())

    def forget_inverse(self) -> None:
        self._inverse = None

    def train(self, mode: bool = True) -> Coupling:
        if mode:  # weights may change from here on
            self.forget_inverse()
        return super().train(mode)

    def mix_inverse(self) -> torch.Tensor:
        """mix's inverse: in eval mode computed once (0.8 ms a coupling) until training or a load."""
        if self.training:
            return torch.linalg.inv(self.mix.detach())
        if self._inverse is None or self._inverse.device != self.mix.device:
            self._inverse = torch.linalg.inv(self.mix.detach())
        return self._inverse

    def _coupling(self, a: torch.Tensor, state: list[torch.Tensor]):
        out, state = self.conditioner(a, state)
        shift, raw = out.chunk(2, -1)
        return shift, MAX_LOG_SCALE * torch.tanh(raw / MAX_LOG_SCALE), state

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Data side to noise side: x (B, P, C) -> y, log|dy/dx| (B,), next state."""
        positions = x.shape[1]
        x = F.linear(x * self.log_scale.exp() + self.bias, self.mix)
        a, b = x[..., : self.half], x[..., self.half :]
        shift, log_s, state = self._coupling(a, state)
        logdet = (self.log_scale.sum() + torch.linalg.slogdet(self.mix)[1]) * positions + log_s.sum((1, 2))
        return torch.cat([a, b * log_s.exp() + shift], -1), logdet, state

    def inverse(self, y: torch.Tensor, mix_inverse: torch.Tensor, state: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Noise side to data side, given mix's inverse: y (B, P, C) -> x, next state."""
        a, b = y[..., : self.half], y[..., self.half :]
        shift, log_s, state = self._coupling(a, state)
        x = F.linear(torch.cat([a, (b - shift) * torch.exp(-log_s)], -1), mix_inverse)
        return (x - self.bias) * torch.exp(-self.log_scale), state


class MixtureBase(nn.Module):
    """p(y_p) = sum_k w_k N(y_p; mean_k, diag(scale_k^2)) for each position's values y_p (channels,), independently."""

    def __init__(self, mixtures: int, channels: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(mixtures))
        self.means = nn.Parameter(0.5 * torch.randn(mixtures, channels))  # apart, so the components can part
        self.log_scales = nn.Parameter(torch.zeros(mixtures, channels))

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, P, C) -> log p per position (B, P)."""
        component = (-0.5 * ((y[..., None, :] - self.means) * torch.exp(-self.log_scales)).square() - self.log_scales
                     - 0.5 * math.log(2 * math.pi)).sum(-1)  # (B, P, K)
        return torch.logsumexp(torch.log_softmax(self.logits, -1) + component, -1)

    def sample(self, uniforms: torch.Tensor, normals: torch.Tensor, temperature: float) -> torch.Tensor:
        """The component whose cumulative weight first reaches each uniform (B, P), then its mean plus temperature *
        its scale * normals (B, P, C); temperature 0 takes the likeliest component's mean."""
        if temperature == 0:
            return self.means[self.logits.argmax()].expand_as(normals)
        weights = torch.softmax(self.logits / temperature, -1)
        pick = torch.searchsorted(weights.cumsum(-1), uniforms.contiguous()).clamp_max(len(weights) - 1)
        return self.means[pick] + temperature * self.log_scales[pick].exp() * normals


@dataclass
class FlowState:
    """Where a stream stands; advanced in place. couplings: each coupling's conditioner caches. pending: a prompt's
    frames after its last whole position (B, latent, < group_frames), normalized; ahead: frames drawn but not yet
    yielded (the rest of a position a chunk ended inside), normalized."""

    couplings: list[list[torch.Tensor]]
    pending: torch.Tensor
    ahead: torch.Tensor
    label: None = None  # flows are not conditional (the interface LearnedPrior reads)


class FlowPrior(NormalizedLatents):
    """p(z) over latent sequences z: (batch, latent_size, frames), in the VAE's latent units."""

    def __init__(self, config: PriorConfig, latent_size: int, labels: int = 0):
        if labels:
            raise UserError("prior.kind flow is not conditional: a labelled recipe needs prior.kind gru or conv")
        super().__init__(latent_size)
        self.config = config
        self.group = config.group_frames
        self.draw_positions = max(1, DRAW_FRAMES // self.group)  # 80 at 8 frames a position
        channels, k = latent_size * self.group, config.mixtures
        self.couplings = nn.ModuleList(Coupling(channels, config) for _ in range(config.couplings))
        # the noise side: N(0, I), or with prior.mixtures > 1 a mixture of diagonal Gaussians per position (one
        # component for all its values, as the autoregressive priors pick one per frame: silence, a vowel ...)
        self.base = MixtureBase(k, channels) if k > 1 else None

    labels = 0

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, P * g) -> (B, P, g * D): position p holds frames p*g .. p*g + g - 1, frame by frame."""
        b, d, t = x.shape
        return x.reshape(b, d, t // self.group, self.group).permute(0, 2, 3, 1).reshape(b, t // self.group, -1)

    def unsqueeze(self, y: torch.Tensor) -> torch.Tensor:
        """(B, P, g * D) -> (B, D, P * g)."""
        b, p, c = y.shape
        return y.reshape(b, p, self.group, c // self.group).permute(0, 3, 1, 2).reshape(b, c // self.group, -1)

    def completed(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, T) with its last frame repeated up to a whole number of positions."""
        missing = -z.shape[-1] % self.group
        return torch.cat([z, z[..., -1:].expand(-1, -1, missing)], -1) if missing else z

    def initial_state(self, batch: int, label: torch.Tensor | None = None) -> FlowState:
        if label is not None:
            raise ValueError("this prior is not conditional: it takes no label")
        device = self.latent_mean.device
        empty = torch.zeros(batch, self.latent_size, 0, device=device)
        return FlowState([c.conditioner.initial_state(batch, device) for c in self.couplings], empty, empty)

    def to_noise(self, x: torch.Tensor, state: FlowState) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized latents (B, D, P * g) -> noise (B, P, g * D), log|det| (B,) of this map; advances `state`."""
        y = self.squeeze(x)
        logdet = torch.zeros((), device=x.device)
        for i, coupling in enumerate(self.couplings):
            y, step, state.couplings[i] = coupling(y, state.couplings[i])
            logdet = logdet + step
        return y, logdet

    def log_prob(self, z: torch.Tensor, input_noise: float = 0.0, generator: torch.Generator | None = None,
                 label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) in nats per frame, (batch, frames): the sequence's log-likelihood spread evenly over its frames
        (a flow scores whole positions, not frames). z: (batch, latent, frames), frames a multiple of group_frames.
        input_noise: std of noise added to the frames while training (normalized units)."""
        if z.shape[-1] % self.group:
            raise ValueError(f"{z.shape[-1]} frames is not a multiple of prior.group_frames ({self.group})")
        if input_noise > 0:
            noise = torch.randn(z.shape, generator=generator).to(z.device)
            z = z + input_noise * noise * self.latent_std[:, None]
        y, logdet = self.to_noise(self.normalize(z), self.initial_state(z.shape[0], label))
        if self.base is None:
            base = (-0.5 * y.square() - 0.5 * math.log(2 * math.pi)).sum((1, 2))
        else:
            base = self.base.log_prob(y).sum(1)
        log_p = (base + logdet) / z.shape[-1] - self.latent_std.log().sum()  # back to the VAE's units
        return log_p[:, None].expand(-1, z.shape[-1])

    @torch.no_grad()
    def nll(self, z: torch.Tensor, label: torch.Tensor | None = None) -> float:
        """Mean negative log-likelihood in nats per frame; a last partial position is completed (`completed`)."""
        was_training = self.training
        self.eval()
        value = -self.log_prob(self.completed(z), label=label).mean().item()
        self.train(was_training)
        return value

    @torch.no_grad()
    def prime(self, z_prompt: torch.Tensor, state: FlowState | None = None,
              label: torch.Tensor | None = None) -> FlowState:
        """Run a prompt's latents (batch, latent, frames) through the flow; returns the state to continue from.
        Frames past the last whole position wait in the state for the next prompt or the first draw."""
        was_training = self.training
        self.eval()
        state = state or self.initial_state(z_prompt.shape[0], label)
        if state.ahead.shape[-1]:
            raise ValueError("this stream has drawn frames it has not yielded; prime a fresh state")
        x = torch.cat([state.pending, self.normalize(z_prompt.to(self.latent_mean.device))], -1)
        whole = x.shape[-1] // self.group * self.group
        for start in range(0, whole, self.group):  # a position at a time: a prompt given in pieces primes the same
            self.to_noise(x[..., start : start + self.group], state)
        state.pending = x[..., whole:]
        self.train(was_training)
        return state

    def sample_stream(self, batch: int, frames: int, temperature: float = 1.0, generator: Generators = None,
                      chunk_frames: int = 256, state: FlowState | None = None,
                      label: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """Yield latent chunks (batch, latent, <= chunk_frames) totalling `frames`, in the VAE's units.

        Each position draws group_frames * latent normals per row, from `generator` or, given a sequence, row i
        from generator[i], position after position, so neither chunk_frames nor (with one generator per row)
        the batch size changes a row's samples; temperature scales them. `state` (e.g. from `prime`) is advanced
        in place; between chunks only it is held, so memory does not grow with `frames`. After a prompt that ends
        inside a position, that position is drawn whole and its first frames replaced by the prompt's (the
        frames within a position are drawn together, so they cannot be drawn given some of them). Positions are
        drawn `draw_positions` at a time, the extra frames held in `state` for the next chunk."""
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not isinstance(generator, torch.Generator | None) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}")
        state = state or self.initial_state(batch, label)
        inverses = [c.mix_inverse() for c in self.couplings]
        left = frames
        while left > 0:
            count = min(chunk_frames, left)
            missing = count - state.ahead.shape[-1]
            while missing > 0:  # after a prompt's partial position, that position alone first
                positions = 1 if state.pending.shape[-1] else self.draw_positions
                drawn = self._draw(state, positions, temperature, generator, inverses)
                state.ahead = torch.cat([state.ahead, drawn], -1)
                missing -= drawn.shape[-1]
            chunk, state.ahead = state.ahead[..., :count], state.ahead[..., count:]
            left -= count
            yield chunk * self.latent_std[:, None] + self.latent_mean[:, None]

    def base_draw(self, positions: int, batch: int, temperature: float, generator: Generators) -> torch.Tensor:
        """The noise side of `positions` positions, (batch, positions, channels): per position and row a uniform (the
        mixture's component, with a mixture base) and `channels` normals, from one generator for the batch or
        row i from generator[i]."""
        channels, mixed = self.latent_size * self.group, self.base is not None
        if isinstance(generator, torch.Generator | None):
            uniforms = torch.rand(positions, batch, generator=generator) if mixed else None
            normals = torch.randn(positions, batch, channels, generator=generator)
        else:
            uniforms = torch.stack([torch.rand(positions, generator=g) for g in generator], 1) if mixed else None
            normals = torch.stack([torch.randn(positions, channels, generator=g) for g in generator], 1)
        device = self.latent_mean.device
        normals = normals.transpose(0, 1).to(device)  # (B, P, C)
        if not mixed:
            return normals * temperature
        return self.base.sample(uniforms.transpose(0, 1).to(device), normals, temperature)

    @torch.no_grad()
    def _draw(self, state: FlowState, positions: int, temperature: float, generator: Generators,
              inverses: list[torch.Tensor]) -> torch.Tensor:
        """The next `positions` positions' frames (B, D, positions * g - pending), normalized; advances `state`."""
        was_training = self.training
        self.eval()
        batch = state.pending.shape[0]
        y = self.base_draw(positions, batch, temperature, generator)
        kept = state.pending.shape[-1]
        before = [list(caches) for caches in state.couplings] if kept else None
        for i in reversed(range(len(self.couplings))):
            y, state.couplings[i] = self.couplings[i].inverse(y, inverses[i], state.couplings[i])
        x = self.unsqueeze(y)
        if kept:  # one position, holding the prompt's last frames: the caches follow what was kept
            state.couplings = before
            self.to_noise(torch.cat([state.pending, x[..., kept:]], -1), state)
            state.pending = state.pending[..., :0]
        self.train(was_training)
        return x[..., kept:]
