"""The learned prior as a host runs it: scriptable, frame after frame, with its state as explicit tensors.

`PriorFace(prior).forward(temperature)` takes one temperature per latent frame, (batch, 1, frames), and
returns that many new latent frames (batch, latent_size, frames), each drawn from p(z_t | z_<t) as
LatentPrior.sample_stream draws it, except that the mixture component is picked by Gumbel-max (argmax of
logits + temperature * Gumbel noise: the same distribution, and ONNX has no searchsorted). At temperature
0 both take the likeliest component's mean, so the two agree exactly there.

A conditional prior takes its label as more input channels after the temperature, (batch, 1 + labels, frames):
label weights per frame, a one-hot or a mix, whose embeddings it mixes linearly (LatentPrior.conditioned).

State, batch first so that ONNX Runtime hosts can allocate it from the card:
    state_0   (B, latent_size, 1)      the previous frame, normalized (zeros: no history)
    gru       (B, layers, hidden)      the GRU's hidden state
    conv      (B, channels, context)   one cache of left context per layer
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.priors.cores import ConvCore, GRUCore
from audiovae.priors.learned import MIN_LOG_SCALE, LatentPrior
from audiovae.priors.sampler import split_mixture


class GRUStep(nn.Module):
    """One frame through a GRUCore: x (B, latent) -> features (B, hidden); states[1] is the hidden state."""

    def __init__(self, core: GRUCore):
        super().__init__()
        self.input, self.gru = core.input, core.gru
        self.shapes = [[core.gru.num_layers, core.gru.hidden_size]]

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        out, hidden = self.gru(self.input(x)[:, None], states[1].transpose(0, 1).contiguous())
        states[1] = hidden.transpose(0, 1)
        return out[:, 0]


class ConvStep(nn.Module):
    """One frame through a ConvCore: x (B, latent) -> features (B, channels); states[1:] are the caches."""

    def __init__(self, core: ConvCore):
        super().__init__()
        self.input = core.input
        self.layers = nn.ModuleList(core.frame_layers)  # the core's own one-frame layers
        self.shapes = [[core.input.out_channels, c] for c in core.context]

    def forward(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        x = F.linear(x, self.input.weight.flatten(1), self.input.bias)
        skip = torch.zeros_like(x)
        for i, layer in enumerate(self.layers):
            x, s, states[i + 1] = layer(x, states[i + 1])
            skip = skip + s
        return torch.relu(skip)


class PriorFace(nn.Module):
    """prior(temperature (B, 1, frames)) -> latents (B, latent_size, frames) in the VAE's units, state kept
    inside between calls (TorchScript) or passed in and out (`step_with_state`, what ONNX exports)."""

    def __init__(self, prior: LatentPrior):
        super().__init__()
        prior = prior.eval()  # its modules are shared: audiovae.realtime.export hands it a copy
        self.step = GRUStep(prior.core) if isinstance(prior.core, GRUCore) else ConvStep(prior.core)
        self.head = prior.head
        self.mixtures, self.latent_size, self.min_log_scale = prior.config.mixtures, prior.latent_size, MIN_LOG_SCALE
        self.register_buffer("latent_mean", prior.latent_mean.clone()[:, None])
        self.register_buffer("latent_std", prior.latent_std.clone()[:, None])
        self.labels = prior.labels
        table = prior.label_embedding.weight if prior.labels else torch.zeros(0, prior.latent_size)
        self.register_buffer("label_table", table.detach().clone())  # (labels, latent_size)
        self.state_shapes: list[list[int]] = [[prior.latent_size, 1], *self.step.shapes]
        self.state: list[torch.Tensor] = self.init_state(1)

    def init_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, shape[0], shape[1]) for shape in self.state_shapes]

    def _draw(self, features: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """features (B, H), temperature (B, 1) -> one normalized frame (B, latent). Negative temperatures count as 0."""
        temperature = temperature.clamp_min(0.0)
        logits, means, log_scales = split_mixture(self.head(features), self.mixtures, self.latent_size,
                                                  self.min_log_scale)  # (B, K), (B, K, D), (B, K, D)
        uniform = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-7)
        pick = torch.argmax(logits - temperature * torch.log(-torch.log(uniform)), dim=-1)  # (B,)
        index = pick[:, None, None].expand(-1, 1, self.latent_size)
        mean = torch.gather(means, 1, index)[:, 0]
        log_scale = torch.gather(log_scales, 1, index)[:, 0]
        noise = torch.exp(log_scale) * torch.randn_like(mean)
        return mean + torch.where(temperature > 0, temperature * noise, torch.zeros_like(noise))

    def step_with_state(self, temperature: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        """temperature (B, 1 [+ labels], frames) -> latents (B, latent, frames); `states` is advanced in place."""
        frames: list[torch.Tensor] = []
        for t in range(temperature.shape[-1]):
            if self.labels == 0:
                features = self.step(states[0][..., 0], states)
                frame = self._draw(features, temperature[:, :, t])
            else:  # the label's embedding on the input frame, as LatentPrior.conditioned adds it
                features = self.step(states[0][..., 0] + torch.matmul(temperature[:, 1:, t], self.label_table), states)
                frame = self._draw(features, temperature[:, :1, t])
            states[0] = frame[..., None]
            frames.append(frame)
        return torch.stack(frames, -1) * self.latent_std + self.latent_mean

    def forward(self, temperature: torch.Tensor) -> torch.Tensor:
        if self.state[0].shape[0] != temperature.shape[0]:
            self.state = self.init_state(temperature.shape[0])
        return self.step_with_state(temperature, self.state)

    @torch.jit.export
    def reset(self):
        for i in range(len(self.state)):
            self.state[i] = torch.zeros_like(self.state[i])
