"""The optional adversarial stage: a multi-scale STFT discriminator, hinge losses and feature matching.

Spectral losses leave the fine structure of a waveform (phase, noise texture) unconstrained; a
discriminator that looks at complex STFTs at several resolutions pushes the decoder towards outputs
that are indistinguishable from real audio, as in EnCodec and RAVE's second stage.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from audiovae.config.recipe import AdversarialConfig
from audiovae.training.loop import adam


class STFTDiscriminator(nn.Module):
    """2-D convolutions over one STFT resolution: wave (B, 1, T) -> feature maps, the last being logits."""

    def __init__(self, window: int, channels: int):
        super().__init__()
        self.window = window
        self.register_buffer("hann", torch.hann_window(window), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for _ in range(3):  # stride 2 along frequency only: (time, frequency)
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.output = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        spec = torch.stft(x[:, 0].float(), self.window, self.window // 4, window=self.hann, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, frames, bins)
        features = []
        for layer in self.layers:
            h = nn.functional.leaky_relu(layer(h), 0.2)
            features.append(h)
        features.append(self.output(h))
        return features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFTDiscriminator per window; forward returns each one's feature maps."""

    def __init__(self, windows: tuple[int, ...], channels: int):
        super().__init__()
        self.scales = nn.ModuleList(STFTDiscriminator(w, channels) for w in windows)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        return [scale(x) for scale in self.scales]


def discriminator_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the discriminator, summed over scales: real logits above 1, fake below -1."""
    return sum(torch.relu(1 - r[-1]).mean() + torch.relu(1 + f[-1]).mean() for r, f in zip(real, fake, strict=True))


def generator_loss(fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the generator, summed over scales."""
    return sum(torch.relu(1 - f[-1]).mean() for f in fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean relative L1 distance between the discriminator's features of real and generated audio."""
    terms = [(r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-5)
             for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs[:-1], fs[:-1], strict=True)]
    return torch.stack(terms).mean()


class Adversary:
    """The discriminator, its optimizer, and one training step of both players."""

    def __init__(self, config: AdversarialConfig, device: torch.device):
        self.config = config
        self.discriminator = MultiScaleSTFTDiscriminator(config.windows, config.channels).to(device)
        self.optimizer = adam(self.discriminator.parameters(), config.learning_rate, betas=(0.5, 0.9))

    def step(self, real: torch.Tensor, generated: torch.Tensor
             ) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, float]]:
        """Update the discriminator on (real, generated.detach()); return the generator's terms, their weights
        and the discriminator's loss as a note, for LossResult.plus.

        real, generated: (batch, 1, samples).
        """
        d_loss = discriminator_loss(self.discriminator(real), self.discriminator(generated.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if torch.distributed.is_initialized():  # keep every rank's discriminator identical
            world = torch.distributed.get_world_size()
            for parameter in self.discriminator.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= world
        self.optimizer.step()
        self.discriminator.requires_grad_(False)  # the generator's loss must not touch the discriminator
        try:
            with torch.no_grad():
                real_features = self.discriminator(real)
            fake_features = self.discriminator(generated)
            terms = {"adversarial": generator_loss(fake_features),
                     "feature_matching": feature_matching(real_features, fake_features)}
        finally:
            self.discriminator.requires_grad_(True)
        weights = {"adversarial": self.config.weight, "feature_matching": self.config.feature_weight}
        return terms, weights, {"discriminator": d_loss.item()}

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
