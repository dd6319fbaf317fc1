"""Export of a conditional run (docs/conditional.md): the label travels as input channels of every method, one
per label, and the exported module under a label's one-hot computes the model under that label."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_PRIORS, synthetic_latents, write_signal
from test_streaming import SHAPES, TINY, signal

from audiovae.cli.main import main
from audiovae.config.recipe import recipe_from_dict
from audiovae.models import build_model
from audiovae.nn.legacy_export import legacy_export
from audiovae.priors.learned import build_prior
from audiovae.realtime.export import OnnxRunner, export_net, read_card, with_one_hot

LABELS = ["kick", "snare", "hat"]


def tiny_conditional():
    """A non-causal PQMF conv model (hop 64, latent size 3) with three labels, and a conditional GRU prior."""
    keys, segment = SHAPES["pqmf"]
    recipe = recipe_from_dict({"data": {"segment_samples": segment},
                               "model": {**TINY, **keys, "causal": False, "conditional": True, "labels": LABELS}},
                              "conditional")
    torch.manual_seed(0)
    net = build_model(recipe).eval()
    prior = build_prior(TINY_PRIORS["gru"], 3, [synthetic_latents(500, 0)[:3]], labels=len(LABELS)).eval()
    return net, recipe, prior


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net, recipe, prior = tiny_conditional()
    folder = tmp_path_factory.mktemp("conditional-export") / "export"
    return net, prior, folder, export_net(net, recipe, folder, prior=prior)


FRESH = """
import sys, torch
module = torch.jit.load(sys.argv[1])
assert "audiovae" not in sys.modules
x, z, mix = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = [(module.encode(torch.cat([x, h], 1)), module.decode(torch.cat([z, h[..., : z.shape[-1]]], 1)))
           for h in [torch.eye(3)[k][None, :, None].expand(2, 3, x.shape[-1]) for k in range(3)]]
    mixed = module.decode(torch.cat([z, mix.expand(2, 3, z.shape[-1])], 1))
torch.save([out, mixed], sys.argv[3])
print(module.get_methods(), [getattr(module, m + "_params").tolist() for m in ("encode", "decode", "forward", "prior")])
"""


def test_a_conditional_export_under_a_one_hot_is_the_model_under_that_label(exported, tmp_path):
    net, _, folder, result = exported
    x, z = signal(12 * 64), torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(0))
    mix = torch.tensor([0.25, 0.75, 0.0])[None, :, None]
    torch.save([x, z, mix], tmp_path / "inputs.pt")
    (tmp_path / "fresh.py").write_text(FRESH)
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "fresh.py"), str(folder / "model.ts"),
                           str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # nn~ reads the label channels in each method's in_channels: 1 + 3 audio, 3 + 3 latent, 1 + 3 temperature
    assert done.stdout.strip() == ("['encode', 'decode', 'forward', 'prior'] "
                                   "[[4, 1, 3, 64], [6, 64, 1, 1], [4, 1, 1, 1], [4, 64, 3, 64]]")
    hosted, mixed = torch.load(tmp_path / "outputs.pt", weights_only=True)
    with torch.no_grad():
        for k, (encoded, decoded) in enumerate(hosted):
            label = torch.full((2,), k)
            torch.testing.assert_close(encoded, net.encode(x, label).mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(decoded, net.decode(z, label=label), atol=1e-5, rtol=1e-5)
        # a mix of labels is the model whose label bias is the same mix of the labels' biases
        blended = net.label_embedding
        weights = (0.25 * blended.encoder.weight[0] + 0.75 * blended.encoder.weight[1],
                   0.25 * blended.decoder.weight[0] + 0.75 * blended.decoder.weight[1])
        saved = blended.encoder.weight[2].clone(), blended.decoder.weight[2].clone()
        blended.encoder.weight[2], blended.decoder.weight[2] = weights
        expected = net.decode(z, label=torch.full((2,), 2))
        blended.encoder.weight[2], blended.decoder.weight[2] = saved
    torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
    # the label matters: each label's decode of the same latents differs from the others'
    decoded = [d for _, d in hosted]
    assert min(float((decoded[a] - decoded[b]).abs().max()) for a, b in [(0, 1), (0, 2), (1, 2)]) > 1e-3
    assert result.label_max_error < 1e-5 and result.onnx_max_error < 1e-4


def test_the_onnx_decode_and_prior_take_the_label_as_channels(exported):
    net, prior, folder, _ = exported
    z = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))
    decode = OnnxRunner(folder / "decode.onnx")
    for k in range(len(LABELS)):
        got = decode(with_one_hot(z, 3, k).numpy())
        with torch.no_grad():
            expected = net.decode(z, label=torch.tensor([k])).numpy()
        assert np.max(np.abs(got - expected)) < 1e-4
    runner = OnnxRunner(folder / "prior.onnx")  # at temperature 0 the frames are the likeliest, deterministic
    for k in range(len(LABELS)):
        runner.reset()
        temperature = with_one_hot(torch.zeros(1, 1, 6), 3, k).numpy()
        got = np.concatenate([runner(temperature[..., t : t + 1]) for t in range(6)], -1)
        expected = torch.cat(list(prior.sample_stream(1, 6, temperature=0.0, label=torch.tensor([k]))), -1)
        assert np.max(np.abs(got - expected.numpy())) < 1e-4, k


def test_the_card_lists_the_labels_in_channel_order(exported):
    folder = exported[2]
    card = read_card(folder)
    assert card["labels"] == LABELS and card["streams"] is False
    assert "one per label in `labels` order" in card["label_channels"]
    assert [i.shape[1] for i in OnnxRunner(folder / "encode.onnx").session.get_inputs()] == [4]


def test_exporting_a_trained_conditional_run(conditional_run, tmp_path):
    """The CLI on a trained conditional frame model (tone and noise labels, whole-signal mel face)."""
    result = CliRunner().invoke(main, ["export", str(conditional_run), str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    assert "labels noise, tone are input channels" in result.output
    card = json.loads((tmp_path / "exported" / "card.json").read_text())
    assert card["labels"] == ["noise", "tone"] and card["methods"] == ["encode", "decode", "forward", "prior"]
    error = float(result.output.rsplit("each one-hot vs the model under its label ", 1)[1].split()[0])
    assert error < 1e-3


def test_streaming_a_conditional_export_is_one_line(exported, tmp_path):
    """Conditional models are not causal (the recipe refuses both), so their exports do not stream; the line says
    so instead of asking for model.causal, which a conditional recipe refuses."""
    source = write_signal(tmp_path / "in.wav", 0.1, 16000)
    result = CliRunner().invoke(main, ["stream", str(source), str(tmp_path / "out.wav"), "--export", str(exported[2])])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: conditional models do not stream yet (their exports run whole signals, "
                                     "the label as input channels: docs/conditional.md); stream an unconditional "
                                     "causal run")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("length", [1, 1001, 64 * 5])
def test_odd_lengths_hold_the_label_over_the_padding(exported, length):
    """encode pads to whole frames; the label channels are held over the padding, so a one-hot stays a one-hot and
    the result is the model's under that label; forward returns the input's length."""
    net, _, folder, _ = exported
    with legacy_export():
        module = torch.jit.load(str(folder / "model.ts"))
    x = signal(length, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(module.encode(with_one_hot(x, 3, 1)), net.encode(x, torch.tensor([1])).mean,
                                   atol=1e-5, rtol=1e-5)
        assert module(with_one_hot(x, 3, 2)).shape == (1, 1, length)
