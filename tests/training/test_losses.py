"""Losses: spectral distances, the KL schedule, free bits, plain reconstruction terms, and a tiny model overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import synthesize

from audiovae.config.recipe import LossConfig, recipe_from_dict
from audiovae.dsp.distances import (
    frame_convergence,
    log_mels,
    mel_density,
    mel_distance,
    mel_weighted_l1,
    stft_distance,
)
from audiovae.dsp.transforms import log_mel, magnitude_spectrogram, power_spectrogram
from audiovae.models import Posterior, build_model
from audiovae.training.losses import beta_at, kl_term, reconstruction_loss, vae_loss

SAMPLE_RATE = 16000
WINDOWS = (512, 256, 128)


def signal(kind: str = "mix", frames: int = 4096, seed: int = 0, **kwargs) -> torch.Tensor:
    """(1, 1, frames) made by the shared test helper."""
    samples = synthesize(0, SAMPLE_RATE, kind=kind, frames=frames, seed=seed, **kwargs)  # (frames, 1)
    return torch.from_numpy(samples.T.copy()).unsqueeze(0)


DISTANCES = {
    "stft": lambda x, y: stft_distance(x, y, WINDOWS),
    "mel": lambda x, y: mel_distance(x, y, SAMPLE_RATE, (1024, 512)),
}


@pytest.mark.parametrize("name", list(DISTANCES))
def test_distance_is_zero_for_identical_signals(name):
    x = signal()
    assert DISTANCES[name](x, x.clone()).item() == 0.0


@pytest.mark.parametrize("name", list(DISTANCES))
def test_distance_is_positive_for_different_signals(name):
    x = signal("sine", frequency=440.0)
    y = signal("sine", frequency=1000.0)
    assert DISTANCES[name](x, y).item() > 0.1
    assert DISTANCES[name](x, signal("chirp")).item() > 0.1


@pytest.mark.parametrize("name", list(DISTANCES))
def test_distance_grows_with_noise_level(name):
    x = signal("sine", frequency=440.0)
    noise = signal("noise", amplitude=1.0, seed=1)
    distances = [DISTANCES[name](x, x + level * noise).item() for level in (0.003, 0.03, 0.3)]
    assert 0 < distances[0] < distances[1] < distances[2], distances


def test_stft_distance_skips_windows_longer_than_the_signal():
    x, y = signal(frames=1000), signal("noise", frames=1000)
    assert stft_distance(x, y, (4096, 512, 128)).item() == stft_distance(x, y, (512, 128)).item()
    with pytest.raises(ValueError, match="longer than the signal"):
        stft_distance(x, y, (2048,))
    with pytest.raises(ValueError, match="longer than the signal"):
        mel_distance(x, y, SAMPLE_RATE, (2048,))


def test_stft_distance_of_a_scaled_copy():
    # |STFT| scales with the signal: convergence |1 - g|, log distance |log g|, the same at every window
    x = signal()
    gain = 0.5
    expected = abs(1 - gain) + abs(torch.log(torch.tensor(gain)).item())
    assert stft_distance(x, gain * x, WINDOWS).item() == pytest.approx(expected, rel=1e-4)


def test_log_mels_of_a_quieter_copy_by_window():
    # what mel_distance compares, window by window: a copy at half the amplitude reads log(0.5) lower in every
    # band at every scale that fits (the mel bands sum magnitudes, which scale with the signal; none at the floor),
    # and mel_distance is the mean of the per-window L1s
    x = 0.1 * torch.randn(1, 1, 1536, generator=torch.Generator().manual_seed(0))  # white: every band above the floor
    pairs = log_mels(x, 0.5 * x, SAMPLE_RATE, (2048, 1024, 512))
    assert [window for window, _, _ in pairs] == [1024, 512]  # 2048 is longer than the signal
    assert [mx.shape[-2] for _, mx, _ in pairs] == [64, 32]  # window // 16 bands
    for _, mx, my in pairs:
        assert torch.allclose(my - mx, torch.full_like(mx, math.log(0.5)), atol=1e-4)
    l1 = torch.stack([(mx - my).abs().mean() for _, mx, my in pairs]).mean()
    assert mel_distance(x, 0.5 * x, SAMPLE_RATE, (2048, 1024, 512)).item() == pytest.approx(l1.item(), rel=1e-6)


# ---- KL weight and free bits ------------------------------------------------------------------------------


def test_beta_ramps_linearly():
    config = LossConfig(beta=0.2, beta_warmup_steps=100)
    assert beta_at(0, config) == 0.0
    assert beta_at(25, config) == pytest.approx(0.05)
    assert beta_at(50, config) == pytest.approx(0.1)
    assert beta_at(100, config) == pytest.approx(0.2)
    assert beta_at(10_000, config) == pytest.approx(0.2)


def test_beta_without_warmup():
    config = LossConfig(beta=0.3, beta_warmup_steps=0)
    assert beta_at(0, config) == 0.3
    assert beta_at(7, config) == 0.3


def free_bits_posterior() -> Posterior:
    """batch 2, latent 3, frames 1. Per-dimension KL averaged over batch and frames: 0, 1.0, 2.0.

    dim 0: at the prior (0 and 0); dim 1: mean 1 and sqrt(3) (0.5 and 1.5, average 1.0); dim 2: mean 2 (2.0 each).
    """
    mean = torch.tensor([[[0.0], [1.0], [2.0]], [[0.0], [3.0**0.5], [2.0]]])
    return Posterior(mean, torch.zeros_like(mean))


def test_kl_term_sums_dimensions():
    assert kl_term(free_bits_posterior()).item() == pytest.approx(0.0 + 1.0 + 2.0)


def test_kl_term_free_bits_clamp_each_dimension_after_averaging():
    # dim 0 -> 1.2, dim 1 (average 1.0, though one example is at 1.5) -> 1.2, dim 2 stays 2.0
    assert kl_term(free_bits_posterior(), free_bits=1.2).item() == pytest.approx(1.2 + 1.2 + 2.0)
    assert kl_term(free_bits_posterior(), free_bits=0.5).item() == pytest.approx(0.5 + 1.0 + 2.0)
    assert kl_term(free_bits_posterior(), free_bits=3.0).item() == pytest.approx(9.0)


def test_kl_term_averages_over_frames():
    mean = torch.zeros(1, 2, 4)
    mean[0, 0, 0] = 2.0  # KL 2 in one of 4 frames of dimension 0
    assert kl_term(Posterior(mean, torch.zeros_like(mean))).item() == pytest.approx(0.5)


def test_free_bits_give_no_gradient_below_the_threshold():
    mean = torch.tensor([[[0.1], [2.0]]], requires_grad=True)  # KL 0.005 and 2.0
    kl_term(Posterior(mean, torch.zeros_like(mean)), free_bits=0.5).backward()
    assert mean.grad[0, 0, 0].item() == 0.0
    assert mean.grad[0, 1, 0].item() == pytest.approx(2.0)  # d(0.5 m^2)/dm


# ---- reconstruction terms ---------------------------------------------------------------------------------


def test_mse_and_l1_by_hand():
    x = torch.tensor([[[0.0, 1.0, -1.0, 0.5]]])
    y = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])  # differences -1, 0, -2, 0.5
    assert reconstruction_loss(x, y, LossConfig(reconstruction="mse"), SAMPLE_RATE).item() == pytest.approx(5.25 / 4)
    assert reconstruction_loss(x, y, LossConfig(reconstruction="l1"), SAMPLE_RATE).item() == pytest.approx(3.5 / 4)


def test_spectral_reconstruction_weights_its_terms():
    x, y = signal(), signal("noise", seed=3)
    config = LossConfig(stft_weight=2.0, mel_weight=0.5, stft_windows=WINDOWS, mel_windows=(512,))
    expected = 2.0 * stft_distance(x, y, WINDOWS) + 0.5 * mel_distance(x, y, SAMPLE_RATE, (512,))
    assert reconstruction_loss(x, y, config, SAMPLE_RATE).item() == pytest.approx(expected.item(), rel=1e-6)
    only_mel = LossConfig(stft_weight=0.0, mel_windows=(512,))
    assert reconstruction_loss(x, y, only_mel, SAMPLE_RATE).item() == pytest.approx(
        mel_distance(x, y, SAMPLE_RATE, (512,)).item(), rel=1e-6)


def test_terms_share_each_stft_and_match_the_feature_code(monkeypatch):
    import audiovae.dsp.distances as distances
    import audiovae.training.losses as losses

    x, y = signal(), signal("noise", seed=3)
    config = LossConfig(stft_windows=(1024, 512, 128), mel_windows=(1024, 512))
    alone = {"stft": stft_distance(x, y, (1024, 512, 128)).item(),
             "log_mel": mel_distance(x, y, SAMPLE_RATE, (1024, 512)).item()}
    calls = []

    def counted(wave, n_fft, hop_length):
        calls.append(n_fft)
        return magnitude_spectrogram(wave, n_fft, hop_length)

    monkeypatch.setattr(distances, "magnitude_spectrogram", counted)
    together = {name: value.item() for name, value in losses.reconstruction_terms(x, y, config, SAMPLE_RATE).items()}
    assert together == pytest.approx(alone, rel=1e-6)
    assert sorted(calls) == [128, 128, 512, 512, 1024, 1024]  # one per signal and window, not one per term
    # the loss's log-mel is the features' log-mel (audiovae.dsp.transforms.log_mel), window by window
    by_features = torch.stack([(log_mel(x, SAMPLE_RATE, w, w // 4, w // 16) - log_mel(y, SAMPLE_RATE, w, w // 4, w // 16))
                               .abs().mean() for w in (1024, 512)]).mean()
    assert alone["log_mel"] == pytest.approx(by_features.item(), rel=1e-5)


def test_vae_loss_adds_the_weighted_kl():
    x = torch.tensor([[[0.0, 1.0, -1.0, 0.5]]])
    y = torch.zeros_like(x)
    config = LossConfig(reconstruction="mse", beta=0.2, beta_warmup_steps=100)
    result = vae_loss(x, y, free_bits_posterior(), config, SAMPLE_RATE, step=50)
    assert result.beta == pytest.approx(0.1)
    assert result.reconstruction.item() == pytest.approx(2.25 / 4)
    assert result.kl.item() == pytest.approx(3.0)
    assert result.total.item() == pytest.approx(2.25 / 4 + 0.1 * 3.0)


# ---- a tiny model overfits a tone -------------------------------------------------------------------------


def spectral_convergence(x: torch.Tensor, y: torch.Tensor, window: int = 512) -> float:
    """||S_x - S_y|| / ||S_x|| of STFT magnitudes: 1.0 for silence, 0 for a perfect match."""
    sx = power_spectrogram(x, window, window // 4).sqrt()
    sy = power_spectrogram(y, window, window // 4).sqrt()
    return (torch.linalg.vector_norm(sx - sy) / torch.linalg.vector_norm(sx)).item()


def test_tiny_conv_model_overfits_a_tone():
    # A 440 Hz tone over a faint noise floor (~36 dB below). On a digitally pure tone every off-tone bin sits
    # at the loss's 1e-10 power floor, and this tiny model first learns silence (convergence stays ~1.0).
    x = signal("sine", frequency=440.0, amplitude=0.5) + signal("noise", amplitude=0.01, seed=1)  # (1, 1, 4096)
    recipe = recipe_from_dict({
        "data": {"segment_samples": 4096},
        "model": {"channels": 8, "max_channels": 16, "strides": [2, 2], "bands": 4, "latent_size": 8,
                  "residual_layers": 1},
        "loss": {"stft_windows": list(WINDOWS), "mel_windows": [512], "beta": 0.0, "beta_warmup_steps": 0},
    }, "overfit")
    torch.manual_seed(0)
    model = build_model(recipe)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            y = model(x).reconstruction
        model.train()
        return reconstruction_loss(x, y, recipe.loss, SAMPLE_RATE).item(), spectral_convergence(x, y)

    first_loss, first_convergence = evaluate()
    for step in range(300):
        out = model(x)
        loss = vae_loss(x, out.reconstruction, out.posterior, recipe.loss, SAMPLE_RATE, step)
        optimizer.zero_grad()
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the recipes do (train.grad_clip: 1.0)
        optimizer.step()
    last_loss, last_convergence = evaluate()
    # measured: 6.44 -> 1.16 (5.5x; 4.8x to 6.5x over other seeds), convergence 1.23 -> 0.064
    assert last_loss < first_loss / 3, (first_loss, last_loss)
    assert first_convergence > 1.0
    assert last_convergence < 0.3, last_convergence  # the tone itself is reproduced, not just silence


# ---- terms over a frame model's log magnitudes ------------------------------------------------------------


def test_frame_convergence_by_hand_and_weighs_loud_bins():
    x = torch.log(torch.tensor([[[4.0, 1.0], [0.01, 0.01]]]))  # (batch, bins, frames): one loud bin, floor
    doubled = x + torch.log(torch.tensor(2.0))  # every magnitude twice the target's: difference = target
    assert frame_convergence(x, x).item() == 0.0
    assert frame_convergence(x, doubled).item() == pytest.approx(1.0, rel=1e-6)
    loud, quiet = x.clone(), x.clone()
    loud[0, 0, 0] += 0.5  # the same log error on the loudest bin and on a floor bin
    quiet[0, 1, 0] += 0.5
    assert frame_convergence(x, loud).item() > 100 * frame_convergence(x, quiet).item()
    # an untrained output far above the target stays finite
    assert torch.isfinite(frame_convergence(x, x + 1000.0))


def test_mel_density_follows_the_slaney_scale():
    density = mel_density(21, 20000)  # bins at 0, 500, ..., 10000 Hz
    assert density.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert density[0].item() == pytest.approx(density[1].item(), rel=1e-6)  # flat under 1 kHz
    assert (density[4] / density[2]).item() == pytest.approx(0.5, rel=1e-5)  # then 1 / f
    assert (density[16] / density[4]).item() == pytest.approx(0.25, rel=1e-5)
    assert (density[2] / density[1]).item() == pytest.approx(27 / math.log(6.4) / 1000 / (3 / 200), rel=1e-5)


def test_mel_weighted_l1_weighs_low_bins_as_the_mel_scale_does():
    x = torch.zeros(2, 513, 4)
    assert mel_weighted_l1(x, x + 0.3, 44100).item() == pytest.approx(0.3, rel=1e-5)  # weights average 1
    low, high = x.clone(), x.clone()
    low[:, 1] += 1.0  # the same log error on a bin under 1 kHz and on the top one
    high[:, -1] += 1.0
    ratio = (3 / 200) / (27 / math.log(6.4) / 22050)  # mel bands a hertz at 0-1 kHz and 22 kHz
    assert (mel_weighted_l1(x, low, 44100) / mel_weighted_l1(x, high, 44100)).item() == pytest.approx(ratio, rel=1e-4)
    assert mel_weighted_l1(x, low, 44100).item() == pytest.approx(mel_weighted_l1(low, x, 44100).item())


@pytest.mark.parametrize("features", ["wave", "mel"])
def test_mel_weighted_l1_needs_stft_bins(features):
    from audiovae.config.schema import ConfigError

    recipe = {"data": {"folder": "d", "features": features}, "loss": {"terms": {"mel_weighted_l1": 1.0}}}
    if features == "mel":
        recipe["model"] = {"family": "mel", "strides": [2, 2]}
    with pytest.raises(ConfigError, match="frequency bins") as caught:
        recipe_from_dict(recipe, "r.yaml")
    assert caught.value.key == "loss.terms.mel_weighted_l1"
    recipe["data"]["features"] = "spectrogram"
    recipe["model"] = {"family": "mel", "strides": [2, 2]}
    assert recipe_from_dict(recipe, "r.yaml").loss.terms == {"mel_weighted_l1": 1.0}


def test_frame_convergence_needs_frames():
    from audiovae.config.schema import ConfigError

    base = {"data": {"folder": "d"}, "loss": {"terms": {"stft": 1.0, "frame_convergence": 1.0}}}
    with pytest.raises(ConfigError, match="needs log-magnitude frames") as caught:
        recipe_from_dict(base, "r.yaml")
    assert caught.value.key == "loss.terms.frame_convergence"
