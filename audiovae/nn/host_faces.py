"""Scriptable faces of trained models: the methods a host (nn~, a plug-in, an app) calls, with no audiovae installed.

A face has `encode`, `decode`, `forward`, `reset` and `get_methods`, the attributes `hop` (samples per latent
frame), `latent_size`, `latency_samples` and `labels`, and nn~'s signature buffers. Each model family builds its
own (`Family.face`); audiovae.realtime.export scripts it to TorchScript and traces its methods to ONNX.

A conditional model's face (docs/conditional.md) takes its label as `labels` more input channels after the
method's other inputs, one per label in model.labels order, at the same rate: a one-hot (or a mix of labels, whose
biases it mixes linearly). encode and forward hold the mean of each call's label channels over the call; decode
(and the prior) read them frame by frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.nn.streaming import StreamingVAE


def register_params(module: nn.Module, latent_size: int, hop: int, prior: bool = False, labels: int = 0) -> None:
    """nn~'s method signatures: `<method>_params` = [in_channels, in_ratio, out_channels, out_ratio].

    prior: a temperature signal (one value per latent frame) in, latent frames out. labels: a conditional model's
    label channels, which every method takes after its other inputs."""
    signatures = {"encode": [1 + labels, 1, latent_size, hop], "decode": [latent_size + labels, hop, 1, 1],
                  "forward": [1 + labels, 1, 1, 1]}
    if prior:
        signatures["prior"] = [1 + labels, hop, latent_size, hop]
    for method, params in signatures.items():
        module.register_buffer(f"{method}_params", torch.tensor(params, dtype=torch.int32))


class LabelledStack(nn.Module):
    """A conditional model's encoder or decoder (nn.Sequential) as a host runs it: x (B, C + labels, T) -> the
    stack's output, where the last `labels` channels are label weights per frame (a one-hot, or a mix) and
    `table` (labels, channels) the LabelEmbedding's biases, added to the first layer's output as the model adds
    its label's (audiovae.nn.blocks.with_first_bias)."""

    def __init__(self, stack: nn.Sequential, table: torch.Tensor):
        super().__init__()
        layers = list(stack)
        self.first, self.rest, self.labels = layers[0], nn.Sequential(*layers[1:]), table.shape[0]
        self.register_buffer("table", table.detach().t().contiguous().clone())  # (channels, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = x.shape[1] - self.labels
        return self.rest(self.first(x[:, :split]) + torch.matmul(self.table, x[:, split:]))


def held_label(label: torch.Tensor, frames: int) -> torch.Tensor:
    """label (B, labels, T) -> (B, labels, frames): the mean of each label channel over the call, held."""
    return label.mean(-1, keepdim=True).expand(-1, -1, frames)


class WholeSignal(nn.Module):
    """A face for models that do not stream: each call is one offline pass, nothing carried over.

    Subclasses set hop, latent_size and labels (setup) and implement `encode_padded` (a length that is a multiple
    of the hop; a conditional model's label channels after the signal) and `decode`; encode pads any length,
    forward returns the input's length.
    """

    latency_samples = 0
    labels = 0

    def setup(self, latent_size: int, hop: int, labels: int = 0) -> None:
        self.hop, self.latent_size, self.labels = hop, latent_size, labels
        register_params(self, latent_size, hop, labels=labels)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        extra = (self.hop - x.shape[-1] % self.hop) % self.hop
        if self.labels == 0:
            return self.encode_padded(F.pad(x, (0, extra)))
        split = x.shape[1] - self.labels  # the label is held over the padding: its mean is the call's
        return self.encode_padded(torch.cat([F.pad(x[:, :split], (0, extra)),
                                             held_label(x[:, split:], x.shape[-1] + extra)], 1))

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def with_label(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Latents z (B, latent_size, frames) with x's label channels held over them, for decode; z when unconditional."""
        if self.labels == 0:
            return z
        return torch.cat([z, held_label(x[:, x.shape[1] - self.labels :], z.shape[-1])], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.with_label(self.encode(x), x))[..., : x.shape[-1]]

    @torch.jit.export
    def reset(self):
        pass

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward"]


class StatefulStreaming(nn.Module):
    """The face of a StreamingVAE: the state lives in the module between calls (one per batch row).

    encode (B, 1, n * hop) -> (B, latent_size, n); decode the reverse; forward both. A new batch size
    starts from a zero state; reset() zeroes it.
    """

    labels = 0  # conditional models do not stream yet

    def __init__(self, model: StreamingVAE):
        super().__init__()
        self.model = model
        self.hop, self.latent_size, self.latency_samples = model.hop, model.latent_size, model.latency_samples
        self.state: list[torch.Tensor] = model.init_state(1)
        register_params(self, model.latent_size, model.hop)

    def _fit(self, x: torch.Tensor, ratio: int):
        if x.shape[-1] % ratio != 0:
            raise ValueError("the block length must be a multiple of the method's ratio (see <method>_params)")
        if self.state[0].shape[0] != x.shape[0]:
            self.state = self.model.init_state(x.shape[0])

    @torch.jit.export
    def reset(self):
        for i in range(len(self.state)):
            self.state[i] = torch.zeros_like(self.state[i])

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._fit(x, self.hop)
        return self.model.encode(x, self.state)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._fit(z, 1)
        return self.model.decode(z, self.state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._fit(x, self.hop)
        return self.model(x, self.state)

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward"]


class WithPrior(nn.Module):
    """A face plus the run's learned prior as a fourth method, `prior` (see audiovae.priors.host_face)."""

    def __init__(self, face: nn.Module, prior: nn.Module):
        super().__init__()
        self.face, self.prior_face = face, prior
        self.hop, self.latent_size, self.latency_samples = face.hop, face.latent_size, face.latency_samples
        self.labels = face.labels
        register_params(self, face.latent_size, face.hop, prior=True, labels=face.labels)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.face.encode(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.face.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.face(x)

    @torch.jit.export
    def prior(self, temperature: torch.Tensor) -> torch.Tensor:
        return self.prior_face(temperature)

    @torch.jit.export
    def reset(self):
        self.face.reset()
        self.prior_face.reset()

    @torch.jit.export
    def get_methods(self) -> list[str]:
        return ["encode", "decode", "forward", "prior"]
