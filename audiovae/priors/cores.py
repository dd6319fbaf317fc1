"""The causal cores a learned prior runs over latent frames: a GRU, or gated dilated convolutions that also step
one frame at a time with their left context as state (what the host face streams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from audiovae.priors.learned import PriorConfig


class GRUCore(nn.Module):
    def __init__(self, config: PriorConfig, latent_size: int):
        super().__init__()
        self.input = nn.Linear(latent_size, config.hidden_size)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.input(x.transpose(1, 2)))  # (B, T, H)
        return self.dropout(out).transpose(1, 2)

    def initial_state(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(self.gru.num_layers, batch, self.gru.hidden_size, device=device)  # (layers, B, H)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, latent) -> features (B, H), next state."""
        out, state = self.gru(self.input(x)[:, None], state)
        return out[:, 0], state


class ConvCore(nn.Module):
    """Gated residual layers of causal dilated convolutions with skip connections (WaveNet without conditioning)."""

    def __init__(self, config: PriorConfig, latent_size: int):
        super().__init__()
        width, kernel = config.hidden_size, config.kernel_size
        self.input = nn.Conv1d(latent_size, width, 1)
        self.dilations = config.dilations
        self.gates = nn.ModuleList(nn.Conv1d(width, 2 * width, kernel, dilation=d) for d in self.dilations)
        self.residuals = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in self.dilations)
        self.skips = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in self.dilations)
        self.dropout = nn.Dropout(config.dropout)
        self.context = [(kernel - 1) * d for d in self.dilations]  # left context each layer needs
        # the same layers, one frame at a time (a plain list: their weights are the convs above, saved once)
        self.frame_layers = [GatedFrameStep(self.gates[i], self.residuals[i], self.skips[i], d)
                             for i, d in enumerate(self.dilations)]

    def _layer(self, i: int, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """window: (B, C, context + T) -> residual out, skip (B, C, T)."""
        a, b = self.gates[i](window).chunk(2, dim=1)
        h = self.dropout(torch.tanh(a) * torch.sigmoid(b))
        x = window[..., self.context[i]:]
        return x + self.residuals[i](h), self.skips[i](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        skip = torch.zeros_like(x)
        for i, context in enumerate(self.context):
            x, s = self._layer(i, F.pad(x, (context, 0)))
            skip = skip + s
        return torch.relu(skip)

    def initial_state(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        """Zeros: the same left padding as the offline pass. One (B, C, context) cache per layer."""
        return [torch.zeros(batch, self.input.out_channels, c, device=device) for c in self.context]

    def step(self, x: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (B, latent) -> features (B, C); each cache (B, C, context) drops its oldest frame, gains x."""
        x = F.linear(x, self.input.weight.flatten(1), self.input.bias)  # (B, C)
        skip, caches = torch.zeros_like(x), []
        for layer, cache in zip(self.frame_layers, state, strict=True):
            x, s, cache = layer(x, cache)
            skip = skip + s
            caches.append(cache)
        return torch.relu(skip), caches


class GatedFrameStep(nn.Module):
    """One gated dilated layer of a ConvCore over one frame, with its left context cached.

    One frame through a dilated conv reads `kernel` taps `dilation` apart: the same numbers as the offline
    pass, as matrix products (a conv1d call per frame is ~10x slower on CPU). Scriptable (audiovae.priors.host_face).
    """

    def __init__(self, gate: nn.Conv1d, residual: nn.Conv1d, skip: nn.Conv1d, dilation: int):
        super().__init__()
        self.gate, self.residual, self.skip, self.dilation = gate, residual, skip, dilation

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C), cache (B, C, context) -> next x, skip (B, C), next cache."""
        window = torch.cat([cache, x[..., None]], -1)  # (B, C, context + 1)
        taps = window[..., :: self.dilation].flatten(1)  # (B, C * kernel)
        a, b = F.linear(taps, self.gate.weight.flatten(1), self.gate.bias).chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        residual = F.linear(h, self.residual.weight.flatten(1), self.residual.bias)
        return x + residual, F.linear(h, self.skip.weight.flatten(1), self.skip.bias), window[..., 1:]


CORES: dict[str, type[nn.Module]] = {"gru": GRUCore, "conv": ConvCore}
