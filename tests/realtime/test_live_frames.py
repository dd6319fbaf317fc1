"""The causal frame model streams: audio blocks through the causal STFT, causal convolutions, running phases and
an overlap-add equal its offline pass (audiovae.models.mel.live_reconstruction) n_fft - hop samples later."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import synthesize, write_signal

from audiovae.cli.main import main
from audiovae.config.recipe import load_recipe, recipe_from_dict
from audiovae.config.schema import ConfigError
from audiovae.dsp.causal_stft import causal_log_spectrogram, causal_synthesis, overlap_gain
from audiovae.dsp.inversion import SYNTHESIS_METHODS, locked_phases
from audiovae.dsp.inversion.peaks import peak_locked_phase
from audiovae.models import build_model
from audiovae.models.mel import live_reconstruction, mel_face, streaming_frames
from audiovae.nn.host_faces import StatefulStreaming
from audiovae.nn.legacy_export import legacy_export
from audiovae.nn.streaming import stream_blocks
from audiovae.realtime.export import OnnxRunner, export_net, read_card
from audiovae.realtime.stream_host import cannot_stream

TINY = {"family": "mel", "channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 2,
        "kernel_size": 3, "activation": "leaky_relu", "strides": [2], "causal": True}
SECONDS = 10


def live(method: str = "peaks", seed: int = 0, **model):
    """A tiny causal frame model (n_fft 512, hop 128, 16 kHz) whose output is loud: log magnitudes near 0."""
    recipe = recipe_from_dict({"data": {"features": "spectrogram", "segment_samples": 2048,
                                        "mel": {"n_fft": 512, "hop_length": 128}},
                               "model": {**TINY, **model}, "synthesis": {"method": method, "iterations": 0},
                               "loss": {"terms": {"l1": 1.0}}}, "live")
    torch.manual_seed(seed)
    net = build_model(recipe).eval()
    with torch.no_grad():
        net.decoder[-1].bias += 5.0  # undo the model's offset of -5: frames at full scale, not e^-5 of it
    return net, recipe


def voice(length: int, batch: int = 1) -> torch.Tensor:
    wave = synthesize(0, 16000, channels=batch, kind="mix", frames=length, amplitude=0.8)  # (length, batch)
    return torch.from_numpy(wave.T.copy()).unsqueeze(1)


@pytest.fixture(scope="module")
def reference():
    """The offline pass in float64, the reference every stream is held to (float32 streams too: their running
    phases add up the float32 network's rounding of the magnitudes, 8e-6 of full scale after 10 s)."""
    net, recipe = live()
    net = net.double()
    x = voice(SECONDS * 16000 + 37).double()  # an odd length
    with torch.no_grad():
        offline = live_reconstruction(net, recipe, x[:, 0])[:, None]
    assert offline.abs().max() > 0.1  # loud enough for 1e-5 of full scale to mean something
    return net, recipe, x, offline


@pytest.mark.parametrize("block", [256, 512, 1024, 4096])
def test_stream_equals_offline_shifted_by_the_latency(reference, block):
    net, recipe, x, offline = reference
    model = streaming_frames(net, recipe)
    assert model.latency_samples == 512 - 128 and model.hop == 256
    streamed = stream_blocks(model, x, block)  # stream[latency:][:length]
    assert streamed.shape == x.shape
    assert (streamed - offline).abs().max() < 1e-5


@pytest.mark.parametrize("block", [256, 512, 1024, 4096])
def test_torchscript_stream_equals_offline(reference, block):
    net, recipe, x, offline = reference
    with legacy_export(notes=True):
        scripted = torch.jit.script(StatefulStreaming(streaming_frames(net, recipe)).eval())
    latency, length = scripted.latency_samples, x.shape[-1]
    padded = torch.nn.functional.pad(x, (0, -(-(length + latency) // block) * block - length))
    with torch.no_grad():
        streamed = torch.cat([scripted(padded[..., i : i + block]) for i in range(0, padded.shape[-1], block)], -1)
    assert (streamed[..., latency : latency + length] - offline).abs().max() < 1e-5


@pytest.mark.parametrize("length", [1, 255, 1001, 3 * 4096 + 129])
def test_odd_lengths_come_back_whole(length):
    net, recipe = live()
    x = voice(length, batch=2)
    with torch.no_grad():
        offline = live_reconstruction(net, recipe, x[:, 0])[:, None]
    streamed = stream_blocks(streaming_frames(net, recipe), x, 512)
    assert streamed.shape == x.shape == offline.shape
    assert (streamed - offline).abs().max() < 1e-5


class _Explicit(torch.nn.Module):
    """A stream with its state as arguments and results, as the ONNX export traces it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, block: torch.Tensor, *states: torch.Tensor):
        states_list = list(states)
        return (self.model(block, states_list), *states_list)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # the trace is the ONNX exporter's view, called directly
def test_the_onnx_form_of_the_ends_computes_what_torchscript_does():
    """The frame ends have two forms (audiovae.nn.streaming_frames): FFTs for TorchScript and eager PyTorch, matrix
    products for the ONNX export, which traces. A float64 trace against the eager stream, block after block, each
    from its own state: outputs and states agree to rounding."""
    net, recipe = live()
    model = _Explicit(streaming_frames(net.double(), recipe))
    x = voice(8 * 512).double()
    states = model.model.init_state(1)
    with torch.no_grad(), legacy_export():
        traced = torch.jit.trace(model, (x[..., :512], *states), check_trace=False)
        eager_states, traced_states = list(states), list(states)
        for start in range(0, x.shape[-1], 512):
            expected, *eager_states = model(x[..., start : start + 512], *eager_states)
            got, *traced_states = traced(x[..., start : start + 512], *traced_states)
            assert float((got - expected).abs().max()) < 1e-7  # the FFT and the products round apart
    assert float(expected.abs().max()) > 0.05  # a loud stream, not silence
    # the running phases are kept wrapped to [0, 2 pi): compared as angles (for the other states, plain differences)
    apart = [torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi for a, b in zip(eager_states, traced_states,
                                                                                     strict=True)]
    assert max(float(d.abs().max()) for d in apart) < 1e-5


def test_encode_and_decode_stream_separately():
    net, recipe = live("advancing")
    model = streaming_frames(net, recipe)
    x = voice(16 * 256)
    states = model.init_state(1)
    with torch.no_grad():
        z = torch.cat([model.encode(x[..., i : i + 512], states) for i in range(0, x.shape[-1], 512)], -1)
        y = torch.cat([model.decode(z[..., i : i + 3], states) for i in range(0, 15, 3)], -1)
        frames = causal_log_spectrogram(x[:, 0], 512, 128, recipe.data.mel.log_floor)
        offline_z = net.encode_frames(frames).mean
    assert torch.allclose(z, offline_z, atol=1e-5)
    with torch.no_grad():
        expected = causal_synthesis(net.decode_frames(offline_z[..., :15]), recipe.synthesis.phase_advance(512, 128))
    assert torch.allclose(y[..., 384:], expected[..., : 15 * 256 - 384].unsqueeze(1), atol=1e-5)


def test_the_causal_analysis_reads_no_future_and_its_frames_are_the_centred_ones_later():
    x = voice(8192)[:, 0].double()
    frames = causal_log_spectrogram(x, 512, 128, 1e-5)
    changed = x.clone()
    changed[..., 4000:] += 0.5
    # frame t ends at sample (t + 1) * 128: frames 0..30 end at or before 3968 + 128 = 4096 > 4000; 0..29 do not see it
    assert torch.equal(causal_log_spectrogram(changed, 512, 128, 1e-5)[..., :31], frames[..., :31])
    centred = torch.stft(x, 512, 128, window=torch.hann_window(512, dtype=x.dtype), return_complex=True).abs()
    # causal frame t = centred frame t - 1 (n_fft / (2 hop) = 2), past the zeros at the start
    torch.testing.assert_close(frames[..., 4:60], torch.log(centred[..., 3:59].clamp_min(1e-5)))


def test_overlap_add_of_true_phases_gives_the_signal_back():
    # with the analysed phases (not a rule), the causal pair is an identity: the overlap gain is right
    x = voice(4096)[:, 0].double()
    window = torch.hann_window(512, periodic=True, dtype=x.dtype)
    spectrum = torch.stft(torch.nn.functional.pad(x, (384, 0)), 512, 128, window=window, center=False,
                          return_complex=True)
    pieces = torch.fft.irfft(spectrum, 512, dim=1) * window[:, None]
    summed = torch.nn.functional.fold(pieces, (1, 31 * 128 + 512), (1, 512), stride=(1, 128))[:, 0, 0]
    back = summed[:, 384 : 384 + 4096] / overlap_gain(512, 128)
    # the first and last n_fft - hop samples lack the frames before the start and after the end
    torch.testing.assert_close(back[:, 384:-384], x[:, 384:-384])
    assert overlap_gain(512, 128) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least 3 hops"):
        overlap_gain(512, 256)


def test_running_phases_are_the_offline_rule_up_to_each_bins_start():
    # peaks' causal form adds the same steps as peak_locked_phase; only the first frame's step is added once more
    log_magnitude = torch.randn(1, 257, 40, dtype=torch.float64)
    step, owner = SYNTHESIS_METHODS["peaks"].advance(512, 128)(log_magnitude)
    phase, end = locked_phases(step, owner, torch.zeros(1, 257, 1, dtype=torch.float64))
    offline = peak_locked_phase(log_magnitude, 512, 128)
    first = torch.gather(step[..., :1].expand(-1, -1, 40), 1, owner)  # the owner's first step
    difference = torch.remainder(phase - offline - first + torch.pi, 2 * torch.pi) - torch.pi
    assert difference.abs().max() < 1e-9
    # in halves, the state carries on: the same phases
    first_half, middle = locked_phases(step[..., :17], owner[..., :17], torch.zeros(1, 257, 1, dtype=torch.float64))
    second_half, _ = locked_phases(step[..., 17:], owner[..., 17:], middle)
    wrapped = torch.remainder(torch.cat([first_half, second_half], -1) - phase + torch.pi, 2 * torch.pi) - torch.pi
    assert wrapped.abs().max() < 1e-9 and 0 <= end.min() and end.max() < 2 * torch.pi


def test_the_peaks_rules_short_running_form_is_the_general_one():
    """PeakAdvance.running (fewer operations, for the live block) against PhaseAdvance.running, locked_phases over
    its step and owner: the same numbers, batch 2, from a random start."""
    from audiovae.dsp.inversion import PhaseAdvance
    from audiovae.dsp.inversion.peaks import PeakAdvance

    torch.manual_seed(3)
    advance = PeakAdvance(512, 128)
    x, start = torch.randn(2, 257, 9) * 2 - 4, torch.rand(2, 257, 1) * 2 * math.pi
    phase, magnitude, end = advance.running(x, start)
    general = PhaseAdvance.running(advance, x, start)
    assert all(torch.equal(a, b) for a, b in zip((phase, magnitude, end), general, strict=True))


def test_a_wrapped_float32_state_stays_exact_after_hours():
    # a steady tone's bins advance by 2 pi * 0.3 * 128 / 512 each frame; after 2 hours at 125 frames/s
    step = torch.full((1, 1, 1000), 2 * torch.pi * 0.3 * 128 / 512)
    owner = torch.zeros(1, 1, 1000, dtype=torch.long)
    state = torch.zeros(1, 1, 1)
    for _ in range(900):  # 900 000 frames, a call per 1000
        _, state = locked_phases(step, owner, state)
    exact = math.remainder(900_000 * float(step[0, 0, 0]), 2 * math.pi) % (2 * math.pi)  # of the float32 step
    assert abs(float(state) - exact) < 1e-4
    naive = torch.zeros(())  # a float32 running sum, never wrapped: 0.03 rad per addition at 4e5 rad
    for _ in range(900):
        naive = naive + step[0, 0].cumsum(0)[-1]
    assert abs(float(torch.remainder(naive, 2 * torch.pi)) - exact) > 1e-2


def test_a_causal_frame_recipe_is_checked():
    def fails(data: dict, synthesis: dict) -> ConfigError:
        with pytest.raises(ConfigError) as error:
            recipe_from_dict({"data": {"segment_samples": 2048, **data}, "model": TINY, "synthesis": synthesis,
                              "loss": {"terms": {"l1": 1.0}}}, "live")
        return error.value

    spectrogram = {"features": "spectrogram", "mel": {"n_fft": 512, "hop_length": 128}}
    assert fails({"features": "mel", "mel": {"n_fft": 512, "n_mels": 6}}, {"method": "zeros"}).key == "model.causal"
    assert fails(spectrogram, {"method": "zeros", "iterations": 0}).key == "synthesis.method"
    assert fails(spectrogram, {"method": "peaks", "iterations": 4}).key == "synthesis.method"
    halves = {"features": "spectrogram", "mel": {"n_fft": 512, "hop_length": 256}}
    assert fails(halves, {"method": "peaks"}).key == "data.mel.hop_length"
    net, recipe = live()
    assert isinstance(mel_face(net, recipe), StatefulStreaming)


# ---- export: TorchScript for nn~, ONNX with the state explicit, and `audiovae stream` -------------------------

FRESH = """
import sys, numpy as np, torch
module = torch.jit.load(sys.argv[1])
x, block = np.load(sys.argv[2]), int(sys.argv[4])
with torch.no_grad():
    y = torch.cat([module(torch.from_numpy(x[..., i:i + block])) for i in range(0, x.shape[-1], block)], -1)
np.save(sys.argv[3], y.numpy())
assert "audiovae" not in sys.modules
print(module.encode_params.tolist(), module.decode_params.tolist(), module.forward_params.tolist(),
      module.get_methods(), module.latency_samples)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, reference):
    """The float32 model exported, the 10-s signal in float32 and the float64 offline pass (`reference`)."""
    net, recipe = live()
    folder = tmp_path_factory.mktemp("live") / "export"
    result = export_net(net, recipe, folder)
    _, _, x, offline = reference
    return net, recipe, folder, result, x.float(), offline.float()


def padded_for(x: torch.Tensor, block: int, latency: int) -> np.ndarray:
    length = x.shape[-1]
    return torch.nn.functional.pad(x, (0, -(-(length + latency) // block) * block - length)).numpy()


def test_export_writes_a_streaming_card(exported):
    _, _, folder, result, _, _ = exported
    card = read_card(folder)
    assert card["streams"] is True and card["sample_rate"] == 16000 and card["frame_samples"] == 256
    assert card["latency_samples"] == 384 and card["latency_ms"] == 24.0
    assert card["block_sizes"]["multiple_of"] == 256 and card["block_sizes"]["examples"][:2] == [256, 512]
    assert result.onnx_max_error < 1e-5 and result.onnx_relative_error is None
    shapes = [s["shape"][1:] for s in card["onnx_state"]["forward"]]
    assert shapes[0] == [1, 384] and shapes[-2:] == [[257, 1], [1, 384]]  # analysis; running phases, tail
    assert len(card["onnx_state"]["encode"]) + len(card["onnx_state"]["decode"]) == len(shapes)


def test_torchscript_loads_without_audiovae_and_streams_ten_seconds(exported, tmp_path):
    net, recipe, folder, _, x, offline = exported
    block = 512
    np.save(tmp_path / "x.npy", padded_for(x, block, 384))
    (tmp_path / "fresh.py").write_text(FRESH)
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "fresh.py"), str(folder / "model.ts"),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(block)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == ("[1, 1, 3, 256] [3, 256, 1, 1] [1, 1, 1, 1] "
                                          "['encode', 'decode', 'forward'] 384")
    got = torch.from_numpy(np.load(tmp_path / "y.npy"))[..., 384 : 384 + x.shape[-1]]
    expected = stream_blocks(streaming_frames(net, recipe), x, block)
    assert (got - expected).abs().max() < 1e-6  # the scripted stream is the PyTorch stream
    assert (got - offline).abs().max() < 1e-5  # float32, against the float64 offline pass


@pytest.mark.parametrize("block", [256, 512, 1024, 4096])
def test_onnx_runtime_streams_ten_seconds_like_the_offline_pass(exported, block):
    net, recipe, folder, _, x, offline = exported
    runner = OnnxRunner(folder / "forward.onnx", threads=1)
    padded = padded_for(x, block, 384)
    got = np.concatenate([runner(padded[..., i : i + block]) for i in range(0, padded.shape[-1], block)], -1)
    got = got[..., 384 : 384 + x.shape[-1]]
    assert got.shape == x.shape  # 10 s + 37 samples: an odd length comes back whole
    # float32 in ONNX Runtime against the float64 offline pass, 10 s on (the running phases' error grows with time)
    assert np.abs(got - offline.numpy()).max() < 1e-5
    expected = stream_blocks(streaming_frames(net, recipe), x, block).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_encode_and_decode_run_apart_in_onnx_runtime(exported):
    net, recipe, folder, _, x, _ = exported
    model = streaming_frames(net, recipe)
    states = model.init_state(1)
    encode, decode = OnnxRunner(folder / "encode.onnx"), OnnxRunner(folder / "decode.onnx")
    for i in range(0, 8 * 512, 512):
        piece = x[..., i : i + 512]
        with torch.no_grad():
            z = model.encode(piece, states)
            y = model.decode(z, states)
        np.testing.assert_allclose(encode(piece.numpy()), z.numpy(), atol=1e-5)
        np.testing.assert_allclose(decode(z.numpy()), y.numpy(), atol=1e-5)


def test_cli_streams_the_export_with_deadlines(exported, tmp_path):
    _, _, folder, _, _, _ = exported
    source = write_signal(tmp_path / "in.wav", 1.0, 16000, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    for engine in ("torchscript", "onnx"):
        out = tmp_path / f"out-{engine}.wav"
        result = CliRunner().invoke(main, ["stream", str(source), str(out), "--block", "512", "--engine", engine,
                                           "--export", str(folder)])
        assert result.exit_code == 0, result.output
        assert "latency: 512 (block) + 384 (model) samples = 56.0 ms" in result.output
        assert "missed" in result.output and "x real time" in result.output
        wave, rate = sf.read(out)
        assert rate == 16000 and len(wave) == 16000
    result = CliRunner().invoke(main, ["stream", str(source), str(tmp_path / "o.wav"), "--block", "128",
                                       "--export", str(folder)])
    assert result.exit_code == 1 and "use 256, 512, 768, 1024" in result.output
    assert cannot_stream({"family": "mel", "causal": True}) is None


def test_the_live_recipe_streams_at_under_45_ms_with_its_smallest_block():
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "live.yaml",
                         ["model.channels=4", "model.max_channels=8", "model.latent_size=2"])
    assert recipe.model.family == "mel" and recipe.model.causal and recipe.data.sample_rate == 16000
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    model = streaming_frames(net, recipe)
    assert (model.hop, model.latency_samples) == (256, 384)  # 384 = n_fft - hop: 24 ms
    assert 1000 * (model.hop + model.latency_samples) / 16000 == 40.0
    x = voice(3 * 4096 + 129)
    with torch.no_grad():
        offline = live_reconstruction(net, recipe, x[:, 0])[:, None]
    assert (stream_blocks(model, x, 512) - offline).abs().max() < 1e-5


def test_the_live_recipe_exports_its_prior_so_prior_then_decode_plays(tmp_path):
    from audiovae.priors.learned import build_prior

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "live.yaml",
                         ["model.channels=4", "model.max_channels=8", "model.latent_size=2", "prior.hidden_size=8",
                          "prior.layers=1"])
    torch.manual_seed(0)
    result = export_net(build_model(recipe).eval(), recipe, tmp_path, prior=build_prior(recipe.prior, 2))
    assert result.card["methods"] == ["encode", "decode", "forward", "prior"] and result.onnx_max_error < 1e-4
    with legacy_export():
        module = torch.jit.load(str(tmp_path / "model.ts"))
    with torch.no_grad():
        z = module.prior(torch.ones(1, 1, 4))
        y = module.decode(z)
    assert z.shape == (1, 2, 4) and y.shape == (1, 1, 4 * 256) and torch.isfinite(y).all()


def test_a_trained_live_run_exports_and_streams_from_the_cli(tmp_path):
    """prepare -> train (2 steps) -> `audiovae export` -> `audiovae stream --run`, on live.yaml made tiny."""
    import yaml

    from audiovae.data.prepare import prepare
    from audiovae.training.vae_stage import train

    for i, frequency in enumerate((220.0, 330.0, 440.0)):
        write_signal(tmp_path / "audio" / f"tone_{i}.wav", 0.6, 16000, kind="chirp", frequency=frequency,
                     stop_frequency=3000.0)
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "recipes" / "live.yaml").read_text())
    del raw["prior"]
    raw["data"].update(folder=str(tmp_path / "prepared"), segment_samples=2048, valid_fraction=0.34)
    raw["model"].update(channels=4, max_channels=8, latent_size=2)
    raw["train"] = {"batch_size": 2, "max_steps": 2, "valid_every": 2, "checkpoint_every": 2, "log_every": 1,
                    "device": "cpu", "num_threads": 1}
    recipe_path = tmp_path / "live.yaml"
    recipe_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = load_recipe(recipe_path).data
    prepare([tmp_path / "audio"], tmp_path / "prepared", data, workers=1, progress=False)
    run = train(recipe_path, runs_root=tmp_path / "runs", progress=False).run_dir
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run), str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert "latency 384 samples" in result.output
    source = write_signal(tmp_path / "in.wav", 0.5, 16000, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    result = runner.invoke(main, ["stream", str(source), str(tmp_path / "out.wav"), "--block", "512", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "latency: 512 (block) + 384 (model) samples = 56.0 ms" in result.output
    wave, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(wave) == 8000 and np.isfinite(wave).all()
