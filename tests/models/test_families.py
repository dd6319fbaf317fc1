"""Model families at tiny size: lengths in = lengths out, the posterior's maths, PQMF, checkpoints, every recipe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import synthesize

from audiovae.config.recipe import Recipe, load_recipe, recipe_from_dict, recipe_from_saved
from audiovae.dsp.transforms import log_mel
from audiovae.errors import UserError
from audiovae.io.checkpoint import load_checkpoint, save_checkpoint
from audiovae.models import FAMILIES, VAE, Posterior, build_model
from audiovae.models.conv import ConvVAE
from audiovae.models.dense import DenseVAE
from audiovae.models.mel import MelVAE
from audiovae.nn.blocks import Interleave, transposed_as_phases
from audiovae.nn.pqmf import PQMF
from audiovae.realtime.export import export_net
from audiovae.training.losses import frame_spectra, vae_loss

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
SAMPLE_RATE = 16000
TINY_CONV = {"channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 1, "kernel_size": 5}

# name -> tiny recipe as plain data; hops: conv1 2*3 = 6 (an odd stride), conv4 4*2*2 = 16, mel 2*2 = 4 frames
TINY = {
    "conv1": {"data": {"segment_samples": 1026}, "model": {**TINY_CONV, "strides": [2, 3]}},
    "conv4": {"data": {"segment_samples": 1024}, "model": {**TINY_CONV, "strides": [2, 2], "bands": 4}},
    "mel": {"data": {"features": "mel", "segment_samples": 2048,
                     "mel": {"n_fft": 512, "hop_length": 256, "n_mels": 6}},
            "model": {**TINY_CONV, "family": "mel", "strides": [2, 2], "activation": "leaky_relu"},
            "loss": {"reconstruction": "l1"}},
    "dense": {"data": {"segment_samples": 512}, "model": {"family": "dense", "hidden": [16, 8], "latent_size": 3},
              "loss": {"reconstruction": "mse"}},
}
HOPS = {"conv1": 6, "conv4": 16, "mel": 4, "dense": 512}


def tiny_recipe(name: str) -> Recipe:
    return recipe_from_dict(TINY[name], name)


def tiny_model(name: str, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return build_model(tiny_recipe(name))


def model_input(model: VAE, length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, input_channels, length): a waveform mix in [-1, 1], or log-mel-like values around -5."""
    if not isinstance(model, MelVAE):
        wave = synthesize(0, SAMPLE_RATE, channels=batch, kind="mix", seed=seed, frames=length)  # (length, batch)
        return torch.from_numpy(wave.T.copy()).unsqueeze(1)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.input_channels, length, generator=generator) - 5.0


@pytest.mark.parametrize("name", list(TINY))
def test_hop_matches_the_recipe(name):
    recipe = tiny_recipe(name)
    model = build_model(recipe)
    assert model.hop == HOPS[name]
    if recipe.model.family != "dense":
        assert model.hop == recipe.model.total_stride
    assert model.latent_size == 3


@pytest.mark.parametrize("name", list(TINY))
def test_output_length_equals_input_length(name):
    model = tiny_model(name).eval()
    hop = model.hop
    with torch.no_grad():
        for length in sorted({1, 37, 1001, hop * 3 + 5, hop * 2, hop - 1}):
            x = model_input(model, length)
            out = model(x)
            frames = math.ceil(length / hop)
            assert out.reconstruction.shape == x.shape, length
            assert out.posterior.mean.shape == (2, 3, frames), length
            assert out.posterior.logvar.shape == (2, 3, frames), length
            assert out.latent.shape == (2, 3, frames), length
            assert model.latent_frames(length) == frames
            assert model.encode(x).mean.shape[-1] == frames
            assert torch.isfinite(out.reconstruction).all()
            # decode without a length gives whole hops
            assert model.decode(out.latent).shape == (2, model.input_channels, frames * hop)


@pytest.mark.parametrize("name", ["conv1", "conv4", "dense"])
def test_waveform_input_is_zero_padded_to_the_hop(name):
    model = tiny_model(name).eval()
    x = model_input(model, model.hop * 2 + 3)
    padded = torch.nn.functional.pad(x, (0, model.hop - 3))
    with torch.no_grad():
        assert torch.equal(model.encode(x).mean, model.encode(padded).mean)


def test_waveform_output_is_bounded():
    model = tiny_model("conv4").eval()
    with torch.no_grad():
        y = model(4.0 * model_input(model, 1001)).reconstruction
    assert y.abs().max() <= 1.0


def test_family_classes():
    assert isinstance(tiny_model("conv1"), ConvVAE) and tiny_model("conv1").pqmf is None
    assert isinstance(tiny_model("conv4").pqmf, PQMF) and tiny_model("conv4").pqmf.bands == 4
    assert isinstance(tiny_model("mel"), MelVAE) and tiny_model("mel").input_channels == 6
    assert isinstance(tiny_model("dense"), DenseVAE)


def test_registry_has_exactly_the_three_families():
    assert set(FAMILIES) == {"conv", "mel", "dense"}


@pytest.mark.parametrize("name", list(TINY))
def test_eval_forward_is_deterministic_and_uses_the_mean(name):
    model = tiny_model(name)
    x = model_input(model, 2 * model.hop + 1)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first.reconstruction, second.reconstruction)
    assert torch.equal(first.latent, first.posterior.mean)
    # training mode samples the posterior instead
    model.train()
    with torch.no_grad():
        third, fourth = model(x), model(x)
    assert not torch.equal(third.latent, fourth.latent)
    assert torch.equal(third.posterior.mean, first.posterior.mean)


# ---- the posterior ----------------------------------------------------------------------------------------


def test_kl_is_exactly_zero_at_the_prior():
    zeros = torch.zeros(2, 3, 5)
    assert torch.equal(Posterior(zeros, zeros).kl(), zeros)


def test_kl_is_positive_away_from_the_prior():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 3, 50, generator=generator)
    logvar = torch.randn(4, 3, 50, generator=generator)
    assert (Posterior(mean, logvar).kl() > 0).all()
    assert (Posterior(mean, torch.zeros_like(mean)).kl() > 0).all()
    assert (Posterior(torch.zeros_like(logvar), logvar).kl() > 0).all()


def test_kl_closed_form():
    one = torch.ones(1, 1, 1)
    assert Posterior(one, 0 * one).kl().item() == pytest.approx(0.5, abs=1e-7)  # mean 1, var 1
    assert Posterior(2 * one, 0 * one).kl().item() == pytest.approx(2.0, abs=1e-7)
    # var 2: 0.5 (2 - 1 - ln 2)
    assert Posterior(0 * one, math.log(2.0) * one).kl().item() == pytest.approx(0.5 * (1 - math.log(2.0)), abs=1e-7)


def test_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(2, 4, 7, generator=generator, dtype=torch.float64)
    logvar = torch.randn(2, 4, 7, generator=generator, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(Posterior(mean, logvar).kl(), expected)


def test_sample_at_zero_temperature_is_the_mean():
    generator = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(2, 3, 4, generator=generator), torch.randn(2, 3, 4, generator=generator)
    assert torch.equal(Posterior(mean, logvar).sample(temperature=0.0), mean)


def test_sample_statistics():
    mean = torch.full((1, 1, 200_000), 2.0)
    logvar = torch.full_like(mean, math.log(0.25))  # std 0.5
    posterior = Posterior(mean, logvar)
    z = posterior.sample(generator=torch.Generator().manual_seed(3))
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    hot = posterior.sample(temperature=2.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(hot - mean, 2.0 * (z - mean))  # same noise, twice the spread
    again = posterior.sample(generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, again)


# ---- PQMF -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bands", [2, 4, 8, 16])
def test_pqmf_reconstructs_noise(bands):
    pqmf = PQMF(bands)
    noise = synthesize(0, SAMPLE_RATE, channels=2, kind="noise", frames=4096, seed=bands)
    x = torch.from_numpy(noise.T.copy()).unsqueeze(1)  # (2, 1, 4096)
    sub = pqmf.analysis(x)
    assert sub.shape == (2, bands, 4096 // bands)
    y = pqmf.synthesis(sub)
    assert y.shape == x.shape
    edge = 32 * bands  # twice the filter length
    inner_x, inner_y = x[..., edge:-edge], y[..., edge:-edge]
    snr = 10 * torch.log10(inner_x.square().sum() / (inner_x - inner_y).square().sum())
    assert snr > 50.0


@pytest.mark.parametrize(("in_channels", "out_channels", "kernel", "stride"), [(16, 1, 255, 16), (3, 2, 10, 4), (5, 3, 4, 4)])
def test_transposed_convolution_as_interleaved_phases_gives_the_same_numbers(in_channels, out_channels, kernel, stride):
    torch.manual_seed(kernel)
    weight, x = torch.randn(in_channels, out_channels, kernel), torch.randn(2, in_channels, 37)
    expected = torch.nn.functional.conv_transpose1d(x, weight, stride=stride)
    phases = transposed_as_phases(weight, stride)
    taps = phases.shape[-1]
    got = Interleave(stride)(torch.nn.functional.conv1d(torch.nn.functional.pad(x, (taps - 1, taps - 1)), phases))
    torch.testing.assert_close(got[..., : expected.shape[-1]], expected, atol=1e-4, rtol=1e-4)
    assert 0 <= got.shape[-1] - expected.shape[-1] < stride and not got[..., expected.shape[-1] :].any()


def test_context_frames_is_how_far_one_latent_frame_reaches():
    recipe = load_recipe("recipes/speech.yaml", overrides=("model.channels=4", "model.max_channels=8",
                                                           "model.latent_size=2"))
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    reach = net.context_frames()
    assert reach > 16  # deeper than the fixed 16-frame margin synthesis kept before
    frames, middle = 4 * reach, 2 * reach
    z, x = torch.randn(1, 2, frames), 0.1 * torch.randn(1, 1, frames * net.hop)
    nudged_z, nudged_x = z.clone(), x.clone()
    nudged_z[..., middle] += 0.5
    nudged_x[..., middle * net.hop + 7] += 0.05
    with torch.no_grad():
        out = (net.decode(nudged_z) != net.decode(z))[0, 0].reshape(frames, net.hop).any(1)
        latents = (net.encode(nudged_x).mean != net.encode(x).mean)[0].any(0)
    distances = [(torch.nonzero(moved).flatten() - middle).abs().max().item() for moved in (out, latents)]
    assert max(distances) == reach  # another probe, signal and nudge than the measurement's: the same reach


@pytest.mark.parametrize("bands", [4, 8])
def test_pqmf_puts_a_sine_in_its_band(bands):
    pqmf = PQMF(bands)
    band_width = SAMPLE_RATE / 2 / bands
    for band in range(bands):
        frequency = (band + 0.5) * band_width  # the centre of `band`
        sine = synthesize(0, SAMPLE_RATE, frequency=frequency, frames=4096)
        sub = pqmf.analysis(torch.from_numpy(sine.T.copy()).unsqueeze(0))[..., 64:-64]  # (1, bands, T)
        energy = sub.square().sum(dim=-1)[0]
        assert energy[band] / energy.sum() > 0.99, (band, energy)


# ---- checkpoints ------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    recipe = tiny_recipe("conv4")
    torch.manual_seed(0)
    model = build_model(recipe)
    # move away from the initialization so every parameter matters
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval()
    x = model_input(model, 1001)
    with torch.no_grad():
        expected = model(x).reconstruction
    path = save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "recipe": recipe.to_dict()})
    state = load_checkpoint(path)
    rebuilt_recipe = recipe_from_saved(state["recipe"])
    assert rebuilt_recipe == recipe
    torch.manual_seed(1)
    rebuilt = build_model(rebuilt_recipe).eval()
    with torch.no_grad():
        assert not torch.equal(rebuilt(x).reconstruction, expected)  # a fresh model differs
        rebuilt.load_state_dict(state["model"])
        assert torch.equal(rebuilt(x).reconstruction, expected)


# ---- every shipped recipe, shrunk, trains one step --------------------------------------------------------


def shrink_overrides(recipe: Recipe) -> tuple[str, ...]:
    """Overrides that keep the recipe's family, strides, bands and losses but make it tiny."""
    if recipe.model.family == "dense":
        return ("model.hidden=[32, 16]", "model.latent_size=4", "data.segment_samples=512")
    common = ("model.channels=4", "model.max_channels=8", "model.latent_size=2", "model.residual_layers=1",
              "data.hop_samples=null")
    if recipe.model.family == "mel":
        stride = recipe.model.total_stride  # 2 latent frames, and at least 8 STFT frames for the export's padding
        segment = recipe.data.mel.hop_length * stride * max(2, -(-8 // stride))
        return (*common, "data.mel.n_mels=8", f"data.segment_samples={segment}", "train.crop_samples=null")
    segment = recipe.model.total_stride * 4
    crop = f"train.crop_samples={segment // 2}" if recipe.train.crop_samples else "train.crop_samples=null"
    adversarial = (("adversarial.windows=[128]", "adversarial.channels=2", "adversarial.start_step=0")
                   if recipe.adversarial.enabled else ())
    return (*common, f"data.segment_samples={segment}", crop, *adversarial)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_shrinks_and_trains_one_step(path, tmp_path):
    full = load_recipe(path)
    recipe = load_recipe(path, overrides=shrink_overrides(full))
    assert recipe.model.family == full.model.family
    torch.manual_seed(0)
    model = build_model(recipe)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    if recipe.data.features == "wave":
        wave = synthesize(0, recipe.data.sample_rate, channels=2, kind="mix", frames=recipe.training_samples)
        x = torch.from_numpy(wave.T.copy()).unsqueeze(1)  # (2, 1, samples)
    else:  # frames, as prepare stores them
        wave = synthesize(0, recipe.data.sample_rate, channels=2, kind="mix", frames=recipe.training_samples)
        x = recipe.data.representation.from_audio(torch.from_numpy(wave.T.copy()))
    assert x.shape[1:] == ((1, recipe.training_samples) if recipe.data.features == "wave"
                           else recipe.data.item_shape)
    optimizer_class = torch.optim.AdamW if recipe.train.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=recipe.train.learning_rate,
                                weight_decay=recipe.train.weight_decay)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    out = model(x)
    assert out.reconstruction.shape == x.shape
    step = recipe.loss.beta_warmup_steps  # KL at full weight
    representation = recipe.data.representation  # frames and phases apart, as training reads them
    loss = vae_loss(frame_spectra(x, representation), frame_spectra(out.reconstruction, representation),
                    out.posterior, recipe.loss, recipe.data.sample_rate, step)
    assert torch.isfinite(loss.total) and loss.total.item() > 0
    assert loss.beta == recipe.loss.beta
    torch.testing.assert_close(loss.total, loss.reconstruction + recipe.loss.beta * loss.kl)
    optimizer.zero_grad()
    loss.total.backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert not unchanged
    if recipe.adversarial.enabled:  # and the second stage runs a step of both players
        from audiovae.training.adversarial import Adversary

        adversary = Adversary(recipe.adversarial, torch.device("cpu"))
        terms, weights, notes = adversary.step(x, model(x).reconstruction)
        assert set(terms) == set(weights) == {"adversarial", "feature_matching"}
        assert all(torch.isfinite(t) for t in terms.values()) and notes["discriminator"] > 0
    # and it exports (TorchScript + ONNX, checked against ONNX Runtime), but for a phase head: one line, not yet
    if representation.phase_channels:
        with pytest.raises(UserError, match="export covers frame models without a phase head"):
            export_net(model.eval(), recipe, tmp_path / "export")
        return
    result = export_net(model.eval(), recipe, tmp_path / "export")
    assert (tmp_path / "export" / "model.ts").exists() and result.onnx_max_error < 1e-4


def test_griffin_lim_fills_every_sample_of_the_frames_it_inverts():
    from audiovae.dsp.inversion import SynthesisConfig
    from audiovae.dsp.transforms import griffin_lim_from_log_mel

    tone = torch.from_numpy(synthesize(1.0, 16000)[:, 0])
    frames = log_mel(tone, 16000, 1024, 256, 80)[..., :62]  # as prepare stores them: the last frame dropped
    wave = griffin_lim_from_log_mel(frames, 16000, 1024, 256, SynthesisConfig("zeros", 8))
    assert wave.shape == (62 * 256,)
    assert wave[-256:].abs().max() > 0.1  # the last hop is sound, not padding
