"""The learned phase (issue 29): features spectrogram_phase store STFT phases beside the log magnitudes, a mel-family
model grows a phase head trained by anti-wrapped phase distances, and synthesis method `learned` puts its phases
under its magnitudes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audiovae.config.recipe import load_recipe, recipe_from_dict
from audiovae.config.schema import ConfigError
from audiovae.data.prepare import prepare
from audiovae.dsp.distances import anti_wrapped, phase_distances
from audiovae.dsp.inversion import SYNTHESIS_METHODS, SynthesisConfig, locked_phases
from audiovae.dsp.inversion.peaks import PeakAdvance, peak_locked_phase
from audiovae.dsp.transforms import griffin_lim_from_log_magnitude
from audiovae.errors import UserError
from audiovae.models import build_model
from audiovae.training.losses import LOSS_TERMS, frame_spectra, vae_loss

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PHASE_TERMS = {"group_delay": 1.0, "instantaneous_frequency": 1.0}  # as recipes/spectrogram-phase.yaml


def phase_recipe(features: str = "spectrogram_phase", **terms: float):
    return recipe_from_dict({
        "data": {"features": features, "segment_samples": 1024, "mel": {"n_fft": 64, "hop_length": 16}},
        "model": {"family": "mel", "channels": 16, "max_channels": 16, "strides": [2], "latent_size": 8,
                  "residual_layers": 1, "kernel_size": 3, "activation": "leaky_relu"},
        "loss": {"terms": {"l1": 1.0, **terms}, "beta": 0.0},
        "train": {"learning_rate": 0.005},
    }, "phase")


def tones(count: int = 2, samples: int = 1024) -> torch.Tensor:
    t = torch.arange(samples) / 16000
    return torch.stack([0.5 * torch.sin(2 * math.pi * (750.0 + 500.0 * i) * t + i) for i in range(count)])


# ---- the distances ------------------------------------------------------------------------------------------

def test_anti_wrapping_measures_around_the_circle():
    d = torch.tensor([0.0, 0.1, 2 * math.pi - 0.1, -2 * math.pi + 0.3, 4 * math.pi + 0.2, math.pi])
    torch.testing.assert_close(anti_wrapped(d), torch.tensor([0.0, 0.1, 0.1, 0.3, 0.2, math.pi]), atol=1e-5, rtol=0)


def test_phase_distances_are_zero_for_identical_phases_and_blind_to_whole_turns():
    generator = torch.Generator().manual_seed(0)
    phase = (torch.rand(2, 33, 20, generator=generator) * 2 - 1) * math.pi
    log_magnitude = torch.randn(2, 33, 20, generator=generator)
    for value in phase_distances(phase, phase, log_magnitude).values():
        assert value.item() == 0.0
    turns = torch.randint(-3, 4, phase.shape, generator=generator) * (2 * math.pi)
    for value in phase_distances(phase, phase + turns, log_magnitude).values():
        assert value.item() < 1e-5
    other = (torch.rand(2, 33, 20, generator=generator) * 2 - 1) * math.pi
    apart = phase_distances(phase, other, log_magnitude)
    wrapped = phase_distances(phase, other + turns, log_magnitude)
    for name, value in apart.items():
        assert value.item() > 0.5  # random phases are pi / 2 apart on average
        assert abs(wrapped[name].item() - value.item()) < 1e-4


def test_each_distance_sees_its_own_kind_of_error():
    phase = torch.zeros(1, 9, 10)
    flat = torch.zeros(1, 9, 10)
    shifted = phase_distances(phase, phase + 0.5, flat)  # a constant offset: wrong phases, right derivatives
    assert abs(shifted["instantaneous_phase"].item() - 0.5) < 1e-6
    assert shifted["group_delay"].item() < 1e-6 and shifted["instantaneous_frequency"].item() < 1e-6
    frames = torch.arange(10.0)
    drifting = phase_distances(phase, phase + 0.3 * frames, flat)  # a wrong frequency: 0.3 rad a frame
    assert abs(drifting["instantaneous_frequency"].item() - 0.3) < 1e-5 and drifting["group_delay"].item() < 1e-6
    bins = torch.arange(9.0)[:, None]
    delayed = phase_distances(phase, phase + 0.2 * bins, flat)  # a wrong delay: 0.2 rad a bin
    assert abs(delayed["group_delay"].item() - 0.2) < 1e-5 and delayed["instantaneous_frequency"].item() < 1e-6


def test_phase_errors_in_loud_bins_weigh_more_than_in_quiet_ones():
    phase = torch.zeros(1, 4, 6)
    log_magnitude = torch.full((1, 4, 6), -10.0)
    log_magnitude[:, 1] = 0.0  # bin 1 is loud, the rest almost silent
    error_loud, error_quiet = phase.clone(), phase.clone()
    error_loud[:, 1], error_quiet[:, 3] = 1.0, 1.0
    loud = phase_distances(phase, error_loud, log_magnitude)["instantaneous_phase"].item()
    quiet = phase_distances(phase, error_quiet, log_magnitude)["instantaneous_phase"].item()
    assert loud > 0.99 and quiet < 1e-3


# ---- the representation, the recipe and the method ----------------------------------------------------------

def test_items_hold_log_magnitudes_then_phases_and_a_gain_moves_the_magnitudes_alone():
    recipe = phase_recipe(**PHASE_TERMS)
    representation = recipe.data.representation
    assert representation.phase_channels == 33 and representation.item_shape == (66, 64)
    x = representation.from_audio(tones())
    assert x.shape == (2, 66, 64)
    frames, phase = representation.split_phase(x)
    plain = phase_recipe("spectrogram").data.representation.from_audio(tones())
    torch.testing.assert_close(frames, plain)  # the same frames as features: spectrogram
    assert phase.abs().max() <= math.pi + 1e-6 and phase.std() > 1.0
    louder = representation.with_gain(x[0], 6.0)
    torch.testing.assert_close(louder[:33] - x[0, :33], torch.full((33, 64), 6.0 * math.log(10) / 20))
    assert torch.equal(louder[33:], x[0, 33:])


def test_learned_synthesis_of_the_true_phases_gives_the_sound_back():
    recipe = phase_recipe(**PHASE_TERMS)
    assert recipe.synthesis == SynthesisConfig("learned", 0, 0.99)
    representation = recipe.data.representation
    wave = tones()
    audio = representation.to_audio(representation.from_audio(wave), recipe.synthesis)
    assert audio.shape == wave.shape
    # exact but for the last hop's samples, whose frame is not stored (the last frame is repeated)
    assert (audio - wave)[:, : -64].abs().max() < 1e-5
    peaks = representation.to_audio(representation.from_audio(wave), SynthesisConfig("peaks", 0))
    assert (peaks - wave)[:, : -64].abs().max() > 0.1  # peak-locked phases are not the recording's


def test_learned_is_registered_and_refuses_a_model_without_a_phase_head():
    assert "learned" in SYNTHESIS_METHODS and SYNTHESIS_METHODS["learned"].takes_model_phase
    with pytest.raises(UserError) as error:
        load_recipe(RECIPES / "spectrogram.yaml", overrides=("synthesis.method=learned",))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{RECIPES / 'spectrogram.yaml'}: synthesis.method: ")
    assert "phase head" in message and "spectrogram_phase" in message
    log_frames = torch.zeros(1, 33, 8)
    with pytest.raises(ValueError, match="needs the model's phases"):
        griffin_lim_from_log_magnitude(log_frames, 64, 16, SynthesisConfig("learned"))


def test_phase_terms_need_features_that_carry_phases():
    for name in ("instantaneous_phase", *PHASE_TERMS):
        assert LOSS_TERMS[name].needs_phase
        with pytest.raises(ConfigError, match="needs features that carry phases") as error:
            phase_recipe("spectrogram", **{name: 1.0})
        assert error.value.key == f"loss.terms.{name}"


def test_a_causal_phase_head_is_refused_until_it_streams():
    with pytest.raises(ConfigError, match="phase head does not stream yet"):
        recipe_from_dict({"data": {"features": "spectrogram_phase", "segment_samples": 1024,
                                   "mel": {"n_fft": 64, "hop_length": 16}},
                          "model": {"family": "mel", "strides": [2], "causal": True},
                          "loss": {"terms": {"l1": 1.0}}, "synthesis": {"method": "peaks"}}, "causal")


def test_prepared_items_carry_the_phases(tmp_path, write_signal):
    write_signal("a.wav", seconds=1.5, sample_rate=16000, kind="mix")
    recipe = phase_recipe(**PHASE_TERMS)
    data = recipe.data.__class__(**{**recipe.data.__dict__, "folder": str(tmp_path / "prepared"),
                                    "valid_fraction": 0.0})
    prepare([tmp_path / "a.wav"], data.folder, data, workers=1, progress=False)
    stored = np.fromfile(tmp_path / "prepared" / "train.f32", dtype=np.float32).reshape(-1, 66, 64)
    phases = stored[:, 33:]
    assert np.abs(phases).max() <= math.pi + 1e-6 and phases.std() > 1.0
    assert stored[:, :33].min() >= math.log(1e-5) - 1e-4  # log magnitudes above the floor


# ---- the model ----------------------------------------------------------------------------------------------

def test_the_encoder_reads_magnitudes_alone_and_the_head_starts_at_peak_locked_phases():
    recipe = phase_recipe(**PHASE_TERMS)
    torch.manual_seed(0)
    model = build_model(recipe).eval()
    torch.manual_seed(0)
    plain = build_model(phase_recipe("spectrogram")).eval()
    assert model.phase_head is not None and plain.phase_head is None
    x = recipe.data.representation.from_audio(tones())
    scrambled = x.clone()
    scrambled[:, 33:] = torch.rand_like(scrambled[:, 33:]) * 6 - 3
    torch.testing.assert_close(model.encode(x).mean, model.encode(scrambled).mean, rtol=0, atol=0)
    out = model(x).reconstruction
    assert out.shape == x.shape and out[:, 33:].abs().max() <= math.pi + 1e-6
    # the magnitudes' path starts as the same model's without the head
    torch.testing.assert_close(out[:, :33], plain(x[:, :33]).reconstruction)
    # without its corrections, the phases are those locked to the peaks of the model's magnitudes
    step, owner = PeakAdvance(64, 16)(out[:, :33])
    locked, _ = locked_phases(step, owner, torch.zeros(2, 33, 1))
    assert anti_wrapped(out[:, 33:] - locked).mean() > 0.01
    with torch.no_grad():
        model.phase_head.parts.parametrizations.weight.original0.zero_()  # weight norm's scale: no weights
        model.phase_head.parts.bias.view(4, 33)[1::2] = 0.0  # and imaginary parts 0: angles 0
    uncorrected = model(x).reconstruction
    assert anti_wrapped(uncorrected[:, 33:] - locked).max() < 1e-4


def test_a_tiny_model_with_a_phase_head_learns_phases_that_peaks_miss_and_decodes_them():
    recipe = phase_recipe(**PHASE_TERMS)
    representation = recipe.data.representation
    torch.manual_seed(0)
    model = build_model(recipe)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.learning_rate)
    x = representation.from_audio(tones())
    true_magnitude, true_phase = representation.split_phase(x)

    def loss_now():
        out = model(x)
        return vae_loss(frame_spectra(x, representation), frame_spectra(out.reconstruction, representation),
                        out.posterior, recipe.loss, 16000, step=0)

    first = loss_now()
    for _ in range(300):
        loss = loss_now()
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    last = loss_now()
    assert set(PHASE_TERMS) <= set(last.terms)
    for name in PHASE_TERMS:  # each phase distance falls well below its start (about pi / 2: random phases)
        assert last.terms[name].item() < 0.25 * first.terms[name].item(), name
    model.eval()
    with torch.no_grad():
        decoded = model.decode(model.encode(x).mean, x.shape[-1])
        audio = representation.to_audio(decoded, recipe.synthesis)
    assert audio.shape == tones().shape and torch.isfinite(audio).all() and audio.abs().max() > 0.1
    magnitude, learned = representation.split_phase(decoded)
    # closer to the recording's phase differences than the peak-locked phases of the same magnitudes
    ours = phase_distances(true_phase, learned, true_magnitude)
    peaks = phase_distances(true_phase, peak_locked_phase(magnitude, 64, 16), true_magnitude)
    assert ours["group_delay"] < 0.95 * peaks["group_delay"]
    assert ours["instantaneous_frequency"] < peaks["instantaneous_frequency"]


def test_chunked_synthesis_keeps_the_magnitudes_context_not_the_running_sums():
    torch.manual_seed(0)
    model = build_model(phase_recipe(**PHASE_TERMS)).eval()
    torch.manual_seed(0)
    plain = build_model(phase_recipe("spectrogram")).eval()
    assert model.context_frames() == plain.context_frames() < 32
