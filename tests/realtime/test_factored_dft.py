"""The live frame model's DFTs as two small matrix products (audiovae.nn.factored_dft) are torch's rfft and irfft,
and the live-44k recipe (n_fft 1024, split 32 x 32) streams like its offline pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import synthesize

from audiovae.config.recipe import load_recipe
from audiovae.models import build_model
from audiovae.models.mel import live_reconstruction, streaming_frames
from audiovae.nn.factored_dft import FactoredInverseDFT, FactoredRealDFT, split_size
from audiovae.nn.spectral import dft_bases
from audiovae.nn.streaming import stream_blocks


@pytest.mark.parametrize("n_fft", [1024, 512, 384, 18, 13])
def test_the_factored_dft_is_rfft_and_its_inverse_irfft(n_fft):
    frames = torch.randn(2, 5, n_fft, dtype=torch.float64, generator=torch.Generator().manual_seed(n_fft))
    bins = n_fft // 2 + 1
    spectrum = FactoredRealDFT(n_fft).double()(frames)
    expected = torch.fft.rfft(frames, dim=-1)
    assert spectrum.shape == (2, 5, 2 * bins)
    scale = float(expected.abs().max())  # the matrices are stored in float32: 1e-7 of the largest bin
    assert (spectrum[..., :bins] - expected.real).abs().max() < 1e-6 * scale
    assert (spectrum[..., bins:] - expected.imag).abs().max() < 1e-6 * scale
    back = FactoredInverseDFT(n_fft).double()(spectrum)
    assert (back - frames).abs().max() < 1e-6 * float(frames.abs().max())


def test_the_inverse_takes_any_spectrum_as_the_dense_synthesis_basis_does():
    # a model's spectra need not be a real frame's: DC and Nyquist may carry imaginary parts, which both drop
    n_fft, bins = 1024, 513
    _, synthesis, window = dft_bases(n_fft)
    spectrum = torch.randn(1, 3, 2 * bins, dtype=torch.float64)
    dense = spectrum @ synthesis[:, 0].double()  # the basis is windowed
    factored = FactoredInverseDFT(n_fft).double()(spectrum) * window.double()
    assert (factored - dense).abs().max() < 1e-6


def test_the_split_is_the_divisor_nearest_the_square_root():
    assert [split_size(n) for n in (1024, 512, 384, 18, 13)] == [32, 16, 16, 3, 1]


def test_the_44k_recipe_streams_like_its_offline_pass():
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "live-44k.yaml",
                         ["model.channels=4", "model.max_channels=8", "model.latent_size=2"])
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    with torch.no_grad():
        net.decoder[-1].bias += 5.0  # loud frames: log magnitudes near 0, not near the offset of -5
    model = streaming_frames(net, recipe)
    assert (model.hop, model.latency_samples) == (512, 768)
    wave = synthesize(0, 44100, channels=1, kind="mix", frames=44100 + 37, amplitude=0.8)  # (length, 1)
    x = torch.from_numpy(wave.T.copy()).unsqueeze(1)
    with torch.no_grad():
        offline = live_reconstruction(net.double(), recipe, x.double()[:, 0])[:, None]
    assert offline.abs().max() > 0.1
    for block in (512, 1536):
        assert (stream_blocks(model, x, block) - offline).abs().max() < 1e-5
