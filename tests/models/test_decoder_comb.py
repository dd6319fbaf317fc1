"""The comb of issue 12 in the decoders, model.istft_phase: advancing, and the loss term complex_stft.

A decoder whose output repeats once per latent frame puts spectral lines at multiples
of the frame rate. `frame_periodic_share` measures that directly: the share of a signal's (mean-removed)
energy in its frame-synchronous average, ~1 / frames for a signal unrelated to the frame grid, 1 for a
signal that repeats every frame.
"""

from __future__ import annotations

import math

import pytest
import torch

from audiovae.config.recipe import ConfigError, recipe_from_dict
from audiovae.dsp.distances import complex_stft_distance
from audiovae.dsp.transforms import power_spectrogram
from audiovae.models import build_model
from audiovae.nn.istft import ISTFTHead
from audiovae.training.losses import LOSS_TERMS

TINY_CONV = {"channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 1, "kernel_size": 5}
WINDOWS = (512, 256, 128)


def tiny(decoder: str, strides=(2, 3), bands: int = 1, seed: int = 0, upsample: str = "transposed"):
    torch.manual_seed(seed)
    hop = bands * math.prod(strides)
    recipe = recipe_from_dict({"data": {"segment_samples": hop * 96},
                               "model": {**TINY_CONV, "strides": list(strides), "bands": bands, "decoder": decoder,
                                         "upsample": upsample}},
                              "tiny")
    return build_model(recipe).eval(), recipe


def frame_periodic_share(y: torch.Tensor, hop: int, skip_frames: int = 4) -> float:
    """y: (time,) a multiple of hop long. Energy share of the average per-frame pattern, edges skipped."""
    frames = y[skip_frames * hop : len(y) - skip_frames * hop].reshape(-1, hop).double()
    frames = frames - frames.mean()
    pattern = frames.mean(0)
    return float(frames.shape[0] * pattern.square().sum() / frames.square().sum().clamp_min(1e-30))


def constant_latents(latent_size: int, frames: int = 48) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, latent_size)[None, :, None].expand(1, latent_size, frames).contiguous()


@torch.no_grad()
def test_transposed_convolutions_repeat_once_per_frame_for_constant_latents():
    """The cause of the comb in the default decoder: constant latents give a frame-periodic output."""
    model, recipe = tiny("conv")
    y = model.decoder(constant_latents(3))[0, 0]  # bands = 1: the decoder's output is the waveform
    assert frame_periodic_share(y, 6) > 0.9


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("upsample", ["nearest", "ramp"])
def test_nearest_upsampling_keeps_constant_latents_constant(seed, upsample):
    """The fix: repeat (or ramp) then convolve sees the same taps at every output phase, so the frame-periodic
    share falls to about chance (what is left comes from the zero-padded edges), for any weights."""
    periodic, _ = tiny("conv", seed=seed)
    fixed, _ = tiny("conv", seed=seed, upsample=upsample)
    assert frame_periodic_share(periodic.decoder(constant_latents(3))[0, 0], 6) > 0.5
    assert frame_periodic_share(fixed.decoder(constant_latents(3))[0, 0], 6) < 0.05  # chance: 1 / 40 frames


@torch.no_grad()
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stride", [2, 3, 4])
def test_repeat_conv_equals_convolving_the_repeated_signal(causal, stride):
    """RepeatConv runs at the input rate; its numbers are those of repeating, then convolving."""
    from torch import nn

    from audiovae.nn.blocks import RepeatConv

    torch.manual_seed(stride)
    fused = RepeatConv(5, 7, stride, causal)
    naive = nn.Sequential(nn.Upsample(scale_factor=stride, mode="nearest"), fused.conv)
    for steps in (1, 2, 13):
        x = torch.randn(2, 5, steps)
        assert fused(x).shape == (2, 7, steps * stride)
        torch.testing.assert_close(fused(x), naive(x), atol=1e-5, rtol=1e-5)


def test_frame_ramp_draws_a_straight_line_from_each_step_to_the_next():
    from audiovae.nn.blocks import FrameRamp

    y = FrameRamp(1, 4)(torch.tensor([[[1.0, 2.0, 2.0, 0.0]]]))[0, 0]
    expected = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0]
    assert y.tolist() == expected


def sine(frequency: float, phase: float = 0.0, samples: int = 4096) -> torch.Tensor:
    t = torch.arange(samples) / 16000
    return torch.sin(2 * math.pi * frequency * t + phase)[None, None]


def test_complex_stft_sees_phase_that_the_magnitude_distance_does_not():
    x, y = sine(500.0), sine(500.0, math.pi / 2)
    assert complex_stft_distance(x, x.clone(), WINDOWS).item() == 0.0
    sx, sy = power_spectrogram(x, 512, 128), power_spectrogram(y, 512, 128)
    sx, sy = sx[..., 4:-4], sy[..., 4:-4]  # the reflection-padded edges differ
    assert ((sx - sy).abs().sum() / sx.sum()).item() < 0.01  # same magnitudes
    assert complex_stft_distance(x, y, WINDOWS).item() > 0.5
    assert "complex_stft" in LOSS_TERMS


def test_complex_stft_does_not_scale_with_level_and_has_gradients():
    x, y = sine(300.0), sine(310.0, 1.0)
    y.requires_grad_(True)
    distance = complex_stft_distance(x, y, WINDOWS)
    distance.backward()
    assert y.grad.abs().sum() > 0
    assert complex_stft_distance(10 * x, 10 * y.detach(), WINDOWS).item() == pytest.approx(distance.item(), rel=1e-4)


def constant_head_output(phase: str, frames: int = 40) -> torch.Tensor:
    """ISTFTHead (hop 8, n_fft 32) fed the same features every frame: (frames * hop,)."""
    torch.manual_seed(0)
    head = ISTFTHead(4, 8, 32, phase)
    x = torch.randn(1, 4, 1).expand(1, 4, frames).contiguous()
    with torch.no_grad():
        return head(x)[0, 0]


def test_absolute_istft_phase_restarts_every_hop_for_constant_features():
    """The istft decoder's comb: the same phases every frame make a signal that repeats every hop."""
    assert frame_periodic_share(constant_head_output("absolute"), 8) > 0.99


def test_advancing_istft_phase_makes_continuous_sinusoids_for_constant_features():
    """Only the bins at multiples of the frame rate (every 4th bin) may repeat once per hop."""
    y = constant_head_output("advancing")
    assert frame_periodic_share(y, 8) < 0.3  # 0.12 measured; absolute: 1.0
    spectrum = torch.fft.rfft(y[32:-32].double() * torch.hann_window(len(y) - 64, dtype=torch.float64)).abs()
    assert spectrum.max() > 10 * spectrum.median()  # lines (sinusoids), not a noise floor


@torch.no_grad()
@pytest.mark.parametrize("phase", ["absolute", "advancing"])
def test_istft_decoding_in_chunks_like_synth_equals_one_pass(phase):
    torch.manual_seed(0)
    recipe = recipe_from_dict({"data": {"segment_samples": 1024},
                               "model": {**TINY_CONV, "strides": [2, 2], "bands": 4, "decoder": "istft",
                                         "istft_phase": phase}}, "tiny")
    model = build_model(recipe).eval()
    z = torch.randn(1, 3, 64, generator=torch.Generator().manual_seed(0))
    whole = model.decode(z)
    margin, hop = 16, model.hop
    first = model.decode(z[..., : 32 + margin])[..., : 32 * hop]
    second = model.decode(z[..., 32 - margin :])[..., margin * hop :]  # frame 16, like synth (1024 j - 16)
    assert whole.shape[-1] == 64 * hop
    assert torch.allclose(torch.cat([first, second], -1), whole, atol=1e-5)


def test_istft_phase_needs_the_istft_decoder():
    with pytest.raises(ConfigError, match="needs decoder: istft"):
        recipe_from_dict({"model": {"istft_phase": "advancing"}}, "tiny")

