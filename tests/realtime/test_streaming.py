"""Causal models stream: block-by-block output equals the offline pass shifted by the latency; exports agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthesize, write_signal

from audiovae.cli.main import main
from audiovae.config.recipe import load_recipe, recipe_from_dict
from audiovae.config.schema import ConfigError
from audiovae.models import build_model
from audiovae.nn.streaming import StreamingVAE, stream_blocks
from audiovae.realtime.export import OnnxRunner, export_net, read_card

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
TINY = {"channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 2, "kernel_size": 5}
# name -> (model keys, segment): hops 4 * 4 * 4 = 64 with PQMF (latency 15 * 4 - 1 = 59), 2 * 3 = 6 without
SHAPES = {"pqmf": ({"bands": 4, "strides": [4, 4]}, 2048), "odd": ({"bands": 1, "strides": [2, 3]}, 2046),
          "nearest": ({"bands": 4, "strides": [4, 4], "upsample": "nearest"}, 2048),
          "ramp": ({"bands": 4, "strides": [4, 4], "upsample": "ramp"}, 2048)}


def tiny(name: str, causal: bool = True, seed: int = 0):
    keys, segment = SHAPES[name]
    recipe = recipe_from_dict({"data": {"segment_samples": segment},
                               "model": {**TINY, **keys, "causal": causal}}, name)
    torch.manual_seed(seed)
    return build_model(recipe).eval(), recipe


def signal(length: int, batch: int = 2) -> torch.Tensor:
    wave = synthesize(0, 16000, channels=batch, kind="mix", frames=length, amplitude=0.8)  # (length, batch)
    return torch.from_numpy(wave.T.copy()).unsqueeze(1)


def test_causal_flag_keeps_the_checkpoint_layout():
    causal, _ = tiny("pqmf", causal=True)
    offline, _ = tiny("pqmf", causal=False)
    assert list(causal.state_dict()) == list(offline.state_dict())
    assert [p.shape for p in causal.parameters()] == [p.shape for p in offline.parameters()]
    assert offline.latency_samples == 0 and causal.latency_samples == 4 * 15 - 1


@pytest.mark.parametrize("name", list(SHAPES))
def test_causal_output_ignores_the_future(name):
    model, _ = tiny(name)
    x = signal(40 * model.hop, batch=1)
    changed = x.clone()
    cut = 25 * model.hop
    changed[..., cut:] += 0.3
    with torch.no_grad():
        a, b = model.encode(x).mean, model.encode(changed).mean
        # raw decoder output (no latency compensation): samples before the cut's frame see no change
        ya, yb = model.decode_frames(a), model.decode_frames(b)
    assert torch.equal(a[..., :25], b[..., :25]) and not torch.equal(a, b)
    assert torch.allclose(ya[..., :cut], yb[..., :cut], atol=1e-6)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("frames_per_block", [1, 3, 8])
@pytest.mark.parametrize("length", [1001, 2 * 64 * 8 + 37])
def test_stream_equals_offline(name, frames_per_block, length):
    model, _ = tiny(name)
    x = signal(length)
    with torch.no_grad():
        offline = model(x).reconstruction
    streamed = stream_blocks(StreamingVAE(model).eval(), x, frames_per_block * model.hop)
    assert streamed.shape == x.shape
    assert torch.allclose(streamed, offline, atol=1e-5), (streamed - offline).abs().max()


def test_encode_and_decode_stream_separately():
    model, _ = tiny("pqmf")
    streaming = StreamingVAE(model).eval()
    hop, latency = model.hop, model.latency_samples
    x = signal(12 * hop)
    with torch.no_grad():
        mean = model.encode(x).mean  # 13 frames: the latency pads one more
        states = streaming.init_state(2)
        z = torch.cat([streaming.encode(x[..., i : i + 2 * hop], states) for i in range(0, 12 * hop, 2 * hop)], -1)
        assert torch.allclose(z, mean[..., :12], atol=1e-5)
        y = torch.cat([streaming.decode(mean[..., i : i + 1], states) for i in range(13)], -1)
        offline = model.decode(mean[..., :13], 12 * hop)
    assert torch.allclose(y[..., latency : latency + 12 * hop], offline, atol=1e-5)


@pytest.mark.parametrize("path", [p for p in RECIPES if "family: conv" in p.read_text()], ids=lambda p: p.stem)
def test_every_conv_recipe_streams_with_its_documented_latency(path):
    recipe = load_recipe(path, ["model.causal=true", "model.channels=2", "model.max_channels=4",
                                "model.residual_layers=1"])
    model = build_model(recipe).eval()
    bands = recipe.model.bands
    assert model.latency_samples == (15 * bands - 1 if bands > 1 else 0)
    assert model.hop == recipe.model.total_stride
    x = signal(3 * model.hop + 11, batch=1)
    with torch.no_grad():
        offline = model(x).reconstruction
    assert torch.allclose(stream_blocks(StreamingVAE(model), x, 2 * model.hop), offline, atol=1e-5)


def test_quickstart_latency_is_under_50_ms_at_512_samples():
    model = build_model(load_recipe(RECIPES[0].parent / "quickstart.yaml", ["model.causal=true"]))
    assert (model.hop, model.latency_samples) == (256, 239)
    assert 1000 * (512 + model.latency_samples) / 16000 < 50


def test_mel_family_rejects_causal():
    with pytest.raises(ConfigError) as error:
        recipe_from_dict({"data": {"features": "mel", "segment_samples": 2048, "mel": {"n_fft": 512, "n_mels": 6}},
                          "model": {**TINY, "family": "mel", "strides": [2, 2], "causal": True},
                          "loss": {"reconstruction": "l1"}}, "mel")
    assert error.value.key == "model.causal" and "cannot stream" in error.value.message


# ---- export ----------------------------------------------------------------------------------------------------

FRESH = """
import sys, numpy as np, torch
module = torch.jit.load(sys.argv[1])
x = np.load(sys.argv[2])
block = int(sys.argv[4])
with torch.no_grad():
    y = torch.cat([module(torch.from_numpy(x[..., i:i + block])) for i in range(0, x.shape[-1], block)], -1)
    module.reset()
    z = module.encode(torch.from_numpy(x[..., :block]))
np.save(sys.argv[3], y.numpy())
assert "audiovae" not in sys.modules
print(module.encode_params.tolist(), module.decode_params.tolist(), module.forward_params.tolist(), tuple(z.shape))
"""


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "offline"])
def test_export_loads_without_audiovae_and_matches(tmp_path, causal):
    model, recipe = tiny("pqmf", causal=causal)
    result = export_net(model, recipe, tmp_path / "export")
    card = read_card(tmp_path / "export")
    assert card["streams"] is causal and card["latency_samples"] == (59 if causal else 0)
    assert card["frame_samples"] == 64 and card["latent_size"] == 3 and card["recipe"]["model"]["causal"] is causal
    assert result.onnx_max_error is not None and result.onnx_max_error < 1e-4
    block = 3 * 64
    x = signal(4 * block).numpy()
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    done = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "export" / "model.ts"),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(block)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "[1, 1, 3, 64] [3, 64, 1, 1] [1, 1, 1, 1] (2, 3, 3)"
    got = np.load(tmp_path / "y.npy")
    if causal:  # the scripted stream is the offline pass, latency samples later
        expected = stream_blocks(StreamingVAE(model), torch.from_numpy(x), block).numpy()
        got = got[..., 59:]
        expected = expected[..., : got.shape[-1]]
    else:  # each block is its own offline pass
        with torch.no_grad():
            expected = np.concatenate([model(torch.from_numpy(x[..., i : i + block])).reconstruction.numpy()
                                       for i in range(0, x.shape[-1], block)], -1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["pqmf", "nearest", "ramp"])
@pytest.mark.parametrize("block", [64, 256])
def test_onnx_runtime_matches_pytorch_for_any_block(tmp_path, block, name):
    model, recipe = tiny(name)
    export_net(model, recipe, tmp_path)
    streaming = StreamingVAE(model).eval()
    x = signal(8 * 64, batch=1)
    states = streaming.init_state(1)
    runners = {m: OnnxRunner(tmp_path / f"{m}.onnx") for m in ("encode", "decode", "forward")}
    for i in range(0, x.shape[-1], block):
        piece = x[..., i : i + block]
        with torch.no_grad():
            z = streaming.encode(piece, states)
            y = streaming.decode(z, states)
        np.testing.assert_allclose(runners["encode"](piece.numpy()), z.numpy(), atol=1e-4)
        np.testing.assert_allclose(runners["decode"](z.numpy()), y.numpy(), atol=1e-4)
        np.testing.assert_allclose(runners["forward"](piece.numpy()), y.numpy(), atol=1e-4)


# ---- the CLI: export a trained causal run, stream a file through it --------------------------------------------

@pytest.fixture(scope="module")
def causal_run(tiny_recipe, tmp_path_factory) -> Path:
    from audiovae.training.vae_stage import train

    result = train(tiny_recipe, overrides=("model.causal=true", "train.max_steps=2"),
                   runs_root=tmp_path_factory.mktemp("causal-runs"), progress=False)
    return result.run_dir


def test_cli_export_then_stream(causal_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(causal_run), str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    assert "latency 59 samples" in result.output
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert len(card["checkpoint_sha256"]) == 64 and card["streams"] is True
    source = write_signal(tmp_path / "in.wav", 0.3, 16000, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    for engine in ("torchscript", "onnx"):
        out = tmp_path / f"out-{engine}.wav"
        result = runner.invoke(main, ["stream", str(source), str(out), "--block", "128", "--engine", engine,
                                      "--export", str(tmp_path / "export")])
        assert result.exit_code == 0, result.output
        assert "latency: 128 (block) + 59 (model) samples = 11.7 ms" in result.output and "missed" in result.output
        import soundfile as sf

        wave, rate = sf.read(out)
        assert rate == 16000 and len(wave) == 4800
    # on the fly from the run; an input at 8 kHz is refused as a live host would, and resampled when asked
    slow = write_signal(tmp_path / "slow.wav", 0.2, 8000)
    command = ["stream", str(slow), str(tmp_path / "o.wav"), "--block", "64", "--run", str(causal_run)]
    refused = runner.invoke(main, command)
    assert refused.exit_code == 1 and not (tmp_path / "o.wav").exists()
    assert refused.output == (f"error: {slow}: 8000 Hz, but the model runs at 16000 Hz and a live host does not "
                              "resample; pass --resample to resample it here, or train a model at 8000 Hz\n")
    result = runner.invoke(main, [*command, "--resample"])
    assert result.exit_code == 0, result.output
    assert "resampled from 8000 Hz" in result.output


def test_cli_stream_errors_name_the_fix(causal_run, tiny_run, tmp_path):
    runner = CliRunner()
    source = write_signal(tmp_path / "in.wav", 0.1, 16000)
    assert runner.invoke(main, ["export", str(tiny_run), str(tmp_path / "offline")]).exit_code == 0
    assert runner.invoke(main, ["export", str(causal_run), str(tmp_path / "causal")]).exit_code == 0

    def fails(*args: str) -> str:
        result = runner.invoke(main, ["stream", str(source), str(tmp_path / "o.wav"), *args])
        assert result.exit_code == 1
        return result.output

    assert "train with model.causal: true" in fails("--export", str(tmp_path / "offline"))
    assert "use 64, 128, 192, 256" in fails("--export", str(tmp_path / "causal"), "--block", "100")
    assert "no card.json" in fails("--export", str(tmp_path))
    card = json.loads((tmp_path / "causal" / "card.json").read_text())
    (tmp_path / "causal" / "card.json").write_text(json.dumps({**card, "version": 99}))
    assert "newer audiovae" in fails("--export", str(tmp_path / "causal"), "--block", "64")


@pytest.mark.parametrize("stride, dilation, taps", [(1, 1, 3), (2, 1, 4), (1, 3, 3), (4, 1, 4), (1, 1, 1), (3, 2, 5)])
def test_the_matrix_product_form_is_the_convolution(stride, dilation, taps):
    """conv_by_product (TorchScript's and eager PyTorch's path) against F.conv1d (the ONNX export's), batch 2,
    float64: the same sums, so rounding alone apart."""
    from audiovae.nn.streaming import conv_by_product

    torch.manual_seed(stride * 10 + dilation)
    x, weight, bias = torch.randn(2, 5, 61, dtype=torch.float64), torch.randn(7, 5, taps, dtype=torch.float64), \
        torch.randn(7, dtype=torch.float64)
    expected = torch.nn.functional.conv1d(x, weight, bias, stride, 0, dilation)
    got = conv_by_product(x, weight, bias, stride, dilation)
    assert got.shape == expected.shape and float((got - expected).abs().max()) < 1e-12
