"""Scriptable faces of trained models: the methods a host (nn~, a plug-in, an app) calls, with no audiovae installed.

A face has `encode`, `decode`, `forward`, `reset` and `get_methods`, the attributes `hop` (samples per latent
frame), `latent_size` and `latency_samples`, and nn~'s signature buffers. Each model family builds its own
(`Family.face`); audiovae.realtime.export scripts it to TorchScript and traces its methods to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiovae.nn.streaming import StreamingVAE


def register_params(module: nn.Module, latent_size: int, hop: int, prior: bool = False) -> None:
    """nn~'s method signatures: `<method>_params` = [in_channels, in_ratio, out_channels, out_ratio].

    prior: a temperature signal (one value per latent frame) in, latent frames out."""
    signatures = {"encode": [1, 1, latent_size, hop], "decode": [latent_size, hop, 1, 1], "forward": [1, 1, 1, 1]}
    if prior:
        signatures["prior"] = [1, hop, latent_size, hop]
    for method, params in signatures.items():
        module.register_buffer(f"{method}_params", torch.tensor(params, dtype=torch.int32))


class WholeSignal(nn.Module):
    """A face for models that do not stream: each call is one offline pass, nothing carried over.

    Subclasses set hop and latent_size and implement `encode_padded` (a length that is a multiple of the hop)
    and `decode`; encode pads any length, forward returns the input's length.
    """

    latency_samples = 0

    def setup(self, latent_size: int, hop: int) -> None:
        self.hop, self.latent_size = hop, latent_size
        register_params(self, latent_size, hop)

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_padded(F.pad(x, (0, (self.hop - x.shape[-1] % self.hop) % self.hop)))

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))[..., : x.shape[-1]]

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
        register_params(self, face.latent_size, face.hop, prior=True)

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
