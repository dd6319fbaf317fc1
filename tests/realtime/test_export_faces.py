"""Export beyond the streaming conv model: the learned prior as a `prior` method, and the mel family's spectral
transforms as convolutions (what lets ONNX run a Griffin-Lim decoder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PRIOR_LATENT as LATENT
from conftest import TINY_PRIORS as TINY
from conftest import synthetic_latents
from test_streaming import tiny

from audiovae.data.representations import LogMel
from audiovae.dsp.inversion import SynthesisConfig
from audiovae.dsp.transforms import griffin_lim_from_log_mel, inverse_mel_scale, log_mel, mel_filterbank
from audiovae.nn.legacy_export import legacy_export
from audiovae.nn.spectral import ConvSTFT, LogMelFront, MelInversion
from audiovae.priors.host_face import PriorFace
from audiovae.priors.learned import build_prior
from audiovae.realtime.export import OnnxRunner, export_net


def prior_for(kind: str, latent: int = LATENT):
    torch.manual_seed(1)
    prior = build_prior(TINY[kind], latent, [synthetic_latents(500, 0)[:latent]])
    with torch.no_grad():  # a head that prefers different components in different states, as a trained one does
        prior.head.weight.mul_(5.0)
    return prior.eval()


@pytest.mark.parametrize("kind", ["gru", "conv"])  # the frame-stepping priors
def test_prior_face_at_temperature_zero_equals_the_python_stream(kind):
    prior = prior_for(kind)
    expected = torch.cat(list(prior.sample_stream(2, 30, temperature=0.0, chunk_frames=7)), -1)
    with legacy_export(notes=True):
        face = torch.jit.script(PriorFace(prior))
    got = torch.cat([face(torch.zeros(2, 1, n)) for n in (1, 4, 25)], -1)  # blocks of any length
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    face.reset()
    torch.testing.assert_close(face(torch.zeros(2, 1, 30)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "conv"])  # the frame-stepping priors
def test_prior_face_clamps_negative_temperature_to_zero(kind):
    face = PriorFace(prior_for(kind))
    with torch.no_grad():
        zero = face(torch.zeros(1, 1, 6))
        face.reset()
        torch.testing.assert_close(face(torch.full((1, 1, 6), -1.0)), zero)


@pytest.mark.parametrize("kind", ["gru", "conv"])  # the frame-stepping priors
def test_prior_face_samples_the_same_distribution_as_the_python_stream(kind):
    """Gumbel-max picks components with the softmax's probabilities: the per-dim mean and spread of 4000
    frames match the Python sampler's, at temperature 1 and 0.5 (temperature shrinks the spread)."""
    prior = prior_for(kind)
    face = PriorFace(prior)
    spreads = {}
    for temperature in (1.0, 0.5):
        torch.manual_seed(0)
        python = torch.cat(list(prior.sample_stream(8, 500, temperature, torch.Generator().manual_seed(3))), -1)
        face.reset()
        with torch.no_grad():
            hosted = face(torch.full((8, 1, 500), temperature))
        python, hosted = python.transpose(0, 1).flatten(1), hosted.transpose(0, 1).flatten(1)  # (latent, 4000)
        scale = python.std(1)
        assert ((hosted.mean(1) - python.mean(1)).abs() < 0.25 * scale).all(), (hosted.mean(1), python.mean(1))
        assert ((hosted.std(1) / scale - 1).abs() < 0.2).all(), (hosted.std(1), scale)
        spreads[temperature] = hosted.std(1).mean().item()
    assert spreads[0.5] < 0.9 * spreads[1.0]


FRESH_PRIOR = """
import sys, torch
module = torch.jit.load(sys.argv[1])
assert "audiovae" not in sys.modules
z = module.prior(torch.zeros(1, 1, 12))
y = module.decode(z)
print(module.get_methods(), module.prior_params.tolist(), tuple(z.shape), tuple(y.shape))
"""


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "offline"])
def test_export_with_a_prior_has_a_prior_method_in_torchscript_and_onnx(tmp_path, causal):
    model, recipe = tiny("pqmf", causal=causal)  # latent size 3, 64 samples per frame
    prior = prior_for("gru", latent=3)
    result = export_net(model, recipe, tmp_path / "export", prior=prior)
    assert all(p.requires_grad for p in (*model.parameters(), *prior.parameters()))  # the caller's, untouched
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["methods"] == ["encode", "decode", "forward", "prior"] and card["prior"]["onnx_frames_per_call"] == 1
    assert [s["shape"] for s in card["onnx_state"]["prior"]] == [["batch", 3, 1], ["batch", 2, 16]]
    assert result.onnx_max_error < 1e-4  # forward, and the prior's frames at temperature 0
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PRIOR)
    done = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "export" / "model.ts")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['encode', 'decode', 'forward', 'prior'] [1, 64, 3, 64] (1, 3, 12) (1, 1, 768)"
    import onnxruntime

    onnxruntime.set_seed(0)  # ONNX Runtime's random ops draw from the clock unless seeded
    runner = OnnxRunner(tmp_path / "export" / "prior.onnx")  # at temperature 1: random, but the trained range
    frames = np.concatenate([runner(np.ones((16, 1, 1), np.float32)) for _ in range(500)], -1)
    expected = torch.cat(list(prior.sample_stream(16, 500, 1.0, torch.Generator().manual_seed(0))), -1).numpy()
    assert frames.shape == (16, 3, 500) and np.isfinite(frames).all()

    def spread(z):  # interquartile range per latent dim (mixture tails make the std noisy)
        q = np.percentile(z.transpose(1, 0, 2).reshape(3, -1), [25, 75], axis=1)
        return q[1] - q[0]

    assert np.all(np.abs(spread(frames) / spread(expected) - 1) < 0.25), (spread(frames), spread(expected))


def test_a_run_whose_prior_cannot_step_frame_by_frame_exports_without_a_prior_method_and_says_so(tmp_path, capsys):
    from types import SimpleNamespace

    from audiovae.priors.learned import LearnedPrior
    from audiovae.realtime.export import export_model

    net, recipe = tiny("pqmf", causal=True)  # latent size 3
    flow = build_prior(TINY["flow"], 3, [synthetic_latents(500, 0)[:3]]).eval()
    run = SimpleNamespace(net=net, recipe=recipe, prior_refusal=None, learned_prior=LearnedPrior(flow), run="RUN",
                          checkpoint_sha256=None, checkpoint=tmp_path / "absent.pt")
    export_model(run, tmp_path / "export")
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["methods"] == ["encode", "decode", "forward"] and "prior" not in card
    assert not (tmp_path / "export" / "prior.onnx").exists()
    assert ("warning: RUN: its learned prior (prior.kind flow) does not step frame by frame, which the host face "
            "needs; exported without a prior method") in capsys.readouterr().err


# ---- the mel family's transforms as convolutions ------------------------------------------------------------

def speech(seconds: float = 1.5) -> torch.Tensor:
    import soundfile

    demo = Path(__file__).resolve().parents[2] / "data" / "demo"
    wave, rate = soundfile.read(sorted(demo.glob("*.wav"))[0], dtype="float32")
    assert rate == 16000
    return torch.from_numpy(wave[: int(seconds * rate)].copy())


def test_conv_stft_matches_torch_stft_and_inverts():
    x = 0.3 * torch.randn(2, 5000, generator=torch.Generator().manual_seed(0))
    stft = ConvSTFT(512, 128)
    real, imag = stft(x)
    expected = torch.stft(x, 512, 128, window=torch.hann_window(512), center=True, return_complex=True)
    torch.testing.assert_close(real, expected.real, atol=1e-4, rtol=0)
    torch.testing.assert_close(imag, expected.imag, atol=1e-4, rtol=0)
    torch.testing.assert_close(stft.inverse(real, imag, 5000), x, atol=1e-5, rtol=0)


def test_log_mel_front_equals_the_package_log_mel():
    wave = speech()[None]
    filterbank = mel_filterbank(1024, 80, 16000, 0.0, None)
    expected = log_mel(wave, 16000, 1024, 256, 80)[..., : wave.shape[-1] // 256]
    got = LogMelFront(filterbank, 1024, 256, 1e-5)(wave[:, None])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


def test_the_two_mel_inversions_are_one_least_norm_solution():
    """Python synthesis maps mel magnitudes back to STFT bins with torchaudio's InverseMelScale (LAPACK least
    squares), the export with the filterbank's pseudo-inverse: for fewer bands than bins both are the least-norm
    solution, clipped at 0, and they agree to 1e-4 of the largest magnitude (5e-6 when written)."""
    frames = log_mel(speech()[None], 16000, 1024, 256, 80)[..., :72]
    mel = torch.exp(frames)
    filterbank = mel_filterbank(1024, 80, 16000, 0.0, None)
    python = inverse_mel_scale(mel, 16000, 1024)
    export = torch.relu(torch.matmul(torch.linalg.pinv(filterbank.double().T).float(), mel))
    assert (python - export).abs().max() < 1e-4 * python.abs().max()


def test_mel_inversion_fits_as_well_as_torchaudio_and_onnx_runtime_agrees(tmp_path):
    """One synthesis method (the mel default, 32 iterations from zero phases) on both STFTs. Griffin-Lim grows
    rounding differences over its iterations, so the implementations are compared by how well their output's
    log-mel fits the target (equally well) and by sample difference: within 5% of the peak (~1% when written)."""
    frames = log_mel(speech()[None], 16000, 1024, 256, 80)[..., :72]
    synthesis = SynthesisConfig(**LogMel.synthesis_default)
    assert synthesis.iterations == 32
    inversion = MelInversion(mel_filterbank(1024, 80, 16000, 0.0, None), 1024, 256, synthesis).eval()
    with torch.no_grad():
        ours = inversion(frames)[:, 0]
    reference = griffin_lim_from_log_mel(frames, 16000, 1024, 256, synthesis)

    def misfit(wave):
        return (log_mel(wave, 16000, 1024, 256, 80)[..., :72] - frames).abs().mean().item()

    assert ours.shape == reference.shape == (1, 72 * 256)
    assert abs(misfit(ours) - misfit(reference)) < 0.05 * misfit(reference)
    assert misfit(ours) < 0.5 * misfit(0.1 * torch.randn(1, 72 * 256))
    assert (ours - reference).abs().max() < 0.05 * reference.abs().max()
    with legacy_export(notes=True):
        torch.onnx.export(inversion, (frames,), str(tmp_path / "inversion.onnx"), dynamo=False, opset_version=17,
                          input_names=["m"], output_names=["y"], dynamic_axes={"m": {2: "t"}, "y": {2: "t"}})
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "inversion.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"m": frames.numpy()})[0][:, 0]
    assert np.abs(got - ours.numpy()).max() < 0.02 * np.abs(ours.numpy()).max()


@pytest.mark.parametrize(("family", "expected"), [("mel", "Griffin-Lim needs whole spectrograms"),
                                                  ("dense", "each latent frame is a whole segment")])
def test_stream_names_why_mel_and_dense_cannot_stream(family, expected):
    from audiovae.realtime.stream_host import cannot_stream

    assert expected in cannot_stream({"family": family}) and "model.causal: true" in cannot_stream({"family": family})
    assert cannot_stream({"family": "conv", "causal": True}) is None
