"""Anomaly scoring: ROC measures on known scores, streamed frame scores, a tiny model of a synthetic machine that
tells clicks from normal hum better than a model-free baseline, and the `score` command's outputs and errors."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from click.testing import CliRunner

from audiovae.cli.main import main
from audiovae.errors import UserError
from audiovae.evaluation import anomaly
from audiovae.evaluation.anomaly import partial_auc, propose_threshold, roc_auc, roc_curve

RATE = 16000
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "anomaly.yaml"


# ---- ROC measures -------------------------------------------------------------------------------------------
def test_auc_and_partial_auc_of_known_scores():
    normal, anomalous = [0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.7]
    # 15 of the 16 (anomalous, normal) pairs are ordered right
    assert roc_auc(normal, anomalous) == pytest.approx(15 / 16)
    # ROC: up to TPR 0.75 at FPR 0, flat to FPR 0.25: the area over FPR [0, 0.1] is 0.075, / 0.1
    assert partial_auc(normal, anomalous) == pytest.approx(0.75)
    assert partial_auc(normal, anomalous, 0.5) == pytest.approx((0.25 * 0.75 + 0.25 * 1.0) / 0.5)
    assert roc_auc([1, 2], [3, 4]) == 1.0 and partial_auc([1, 2], [3, 4]) == 1.0
    assert roc_auc([3, 4], [1, 2]) == 0.0 and partial_auc([3, 4], [1, 2]) == 0.0
    # all tied: one diagonal step, chance everywhere (pAUC 0.1 / 2)
    assert roc_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert partial_auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.05)
    curve = roc_curve(normal, anomalous)
    assert curve.false_positive_rate[0] == 0 and curve.true_positive_rate[-1] == 1 and curve.false_positive_rate[-1] == 1


def test_auc_is_the_share_of_pairs_ranked_right_with_ties_counting_half():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.integers(0, 12, 40).astype(float), rng.integers(3, 15, 30).astype(float)
    pairs = [(a > n) + 0.5 * (a == n) for a, n in itertools.product(anomalous, normal)]
    assert roc_auc(normal, anomalous) == pytest.approx(np.mean(pairs))


def test_threshold_is_a_percentile_of_normal_scores_only():
    assert propose_threshold(np.arange(1.0, 102.0)) == pytest.approx(96.0)  # the 95th percentile of 1..101
    with pytest.raises(UserError, match="not finite"):
        propose_threshold([1.0, float("nan")])


# ---- a synthetic machine ------------------------------------------------------------------------------------
def machine(seed: int, seconds: float = 2.0, clicks: int = 0) -> np.ndarray:
    """A hum: 120 Hz (+-2 %) with five harmonics and light noise, +-2 dB in level; with `clicks` short bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 * (1 + rng.uniform(-0.02, 0.02))
    wave = sum((0.5 / k) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 7))
    wave = wave + 0.03 * rng.standard_normal(len(t))
    for start in rng.integers(0, len(t) - 40, clicks):
        wave[start : start + 40] += 0.8 * rng.uniform(-1, 1, 40)
    return (0.2 * 10 ** (rng.uniform(-2, 2) / 20) * wave).astype(np.float32)


def write(folder: Path, name: str, wave: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / name, wave, RATE)
    return folder / name


@pytest.fixture(scope="module")
def machine_run(tmp_path_factory):
    """recipes/anomaly.yaml, smaller (16 channels, 0.26-s segments, 600 steps), trained on 16 files of the
    machine; held out: 8 normal files and 8 with 6 clicks each. About 15 s on one core."""
    from audiovae.config.recipe import load_recipe
    from audiovae.data.prepare import prepare
    from audiovae.training.vae_stage import train

    root = tmp_path_factory.mktemp("machine")
    for i in range(16):
        write(root / "train", f"hum_{i}.wav", machine(i))
    for i in range(8):
        write(root / "normal", f"normal_{i}.wav", machine(100 + i))
        write(root / "anomalous", f"clicks_{i}.wav", machine(200 + i, clicks=6))
    raw = yaml.safe_load(RECIPE.read_text())
    raw["data"].update(folder=str(root / "prepared"), segment_samples=4096, valid_fraction=0.2)
    raw["model"].update(channels=16, max_channels=32)
    raw["train"].update(max_steps=600, max_minutes=None, valid_every=300, checkpoint_every=300, valid_batches=2,
                        num_threads=1, device="cpu")
    recipe_path = root / "anomaly.yaml"
    recipe_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    recipe = load_recipe(recipe_path)
    prepare([root / "train"], root / "prepared", recipe.data, workers=1, progress=False)
    result = train(recipe_path, runs_root=root / "runs", progress=False)
    return root, result.run_dir


def test_model_tells_clicks_from_normal_better_than_the_mean_spectrum(machine_run):
    from audiovae.synthesis.model import load

    root, run = machine_run
    model = load(run, device="cpu")
    normal = anomaly.score_files(model, sorted((root / "normal").glob("*.wav")))
    clicks = anomaly.score_files(model, sorted((root / "anomalous").glob("*.wav")))
    separations = anomaly.compare(normal, clicks)
    representation = model.recipe.data.representation
    means = {folder: [anomaly.mean_log_spectrum(representation, model.load_audio(p))
                      for p in sorted((root / folder).glob("*.wav"))] for folder in ("train", "normal", "anomalous")}
    baseline = roc_auc(anomaly.baseline_scores(means["train"], means["normal"]),
                       anomaly.baseline_scores(means["train"], means["anomalous"]))
    default = separations[anomaly.DEFAULT_MEASURE]
    assert default.auc >= 0.9, separations
    assert default.auc > baseline, (separations, baseline)
    assert separations["elbo"].auc >= 0.9
    # every score is a positive rate, and the negative ELBO adds a positive KL to the reconstruction error
    assert all(s.score("reconstruction") > 0 and np.all(s.kl > 0) for s in normal + clicks)
    # the threshold comes from normal files alone and flags about 5 % of them
    assert default.threshold == pytest.approx(np.percentile([s.score(default.measure) for s in normal], 95))


def test_streamed_frame_scores_match_one_pass_for_odd_lengths(machine_run, monkeypatch):
    from audiovae.synthesis import model as synthesis_model

    root, run = machine_run
    model = synthesis_model.load(run, device="cpu")
    wave = machine(300, seconds=3.1, clicks=3)
    for samples in (len(wave), 30001, 1023, 300):
        whole = anomaly.score_wave(model, wave[:samples])
        assert len(whole.reconstruction) == -(-max(1, samples // 256) // 4)  # frames holding a mel frame
        monkeypatch.setattr(synthesis_model, "CHUNK_FRAMES", 5)
        chunked = anomaly.score_wave(model, wave[:samples])
        monkeypatch.undo()
        np.testing.assert_allclose(chunked.reconstruction, whole.reconstruction, rtol=1e-4)
        np.testing.assert_allclose(chunked.kl, whole.kl, rtol=1e-4, atol=1e-4)


def test_a_waveform_model_scores_its_samples(tiny_run):
    """A wave run's features are its samples: the same scores, one per latent frame of 64 samples."""
    from audiovae.synthesis.model import load

    model = load(tiny_run, device="cpu")
    scores = anomaly.score_wave(model, machine(400, seconds=0.3)[:4001])
    assert len(scores.reconstruction) == -(-4001 // 64) and np.all(scores.elbo > scores.reconstruction)


# ---- the command --------------------------------------------------------------------------------------------
def test_score_writes_csv_and_plots_and_exits_3_on_anomalies(machine_run, tmp_path):
    root, run = machine_run
    runner = CliRunner()
    compared = runner.invoke(main, ["score", "--normal", str(root / "normal"), "--anomalous", str(root / "anomalous"),
                                    "--run", str(run), "--plot", str(tmp_path / "roc"), "-q"])
    assert compared.exit_code == 0, compared.output
    assert (tmp_path / "roc" / "roc.png").read_bytes().startswith(b"\x89PNG")
    assert "AUC" in compared.output and "proposed threshold" in compared.output
    threshold = float(compared.output.split("--threshold ")[1].split()[0])

    files = [str(root / "normal" / "normal_0.wav"), str(root / "anomalous" / "clicks_0.wav")]
    args = ["score", *files, "--run", str(run), "--csv", str(tmp_path / "scores.csv"), "--plot",
            str(tmp_path / "plots"), "--threshold", str(threshold), "-q"]
    scored = runner.invoke(main, args)
    assert scored.exit_code == anomaly.ANOMALOUS_EXIT_CODE, scored.output
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    by_file = {Path(r["file"]).name: r for r in rows if r["scope"] == "file"}
    assert by_file["clicks_0.wav"]["anomalous"] == "1" and by_file["normal_0.wav"]["anomalous"] == "0"
    frames = [r for r in rows if r["scope"] == "frame" and Path(r["file"]).name == "clicks_0.wav"]
    assert len(frames) == 32 and float(frames[-1]["end_seconds"]) == pytest.approx(2.0)  # 2 s in 64-ms frames
    assert any(r["anomalous"] == "1" for r in frames) and any(r["anomalous"] == "0" for r in frames)
    assert (tmp_path / "plots" / "clicks_0.png").read_bytes().startswith(b"\x89PNG")

    again = runner.invoke(main, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(main, [*args, "--force"]).exit_code == anomaly.ANOMALOUS_EXIT_CODE
    calm = runner.invoke(main, ["score", files[0], "--run", str(run), "--threshold", str(threshold), "-q"])
    assert calm.exit_code == 0, calm.output


@pytest.mark.parametrize("args, message", [
    ([], "nothing to score"),
    (["--normal", "."], "go together"),
    (["x.wav", "--normal", ".", "--anomalous", "."], "not both"),
    (["{empty}"], "no audio files"),
    (["{empty}/missing.wav"], "no such file or folder"),
    (["{normal}", "--run", "{empty}"], "no checkpoint"),
    (["--normal", "{normal}", "--anomalous", "{anomalous}", "--threshold", "3"], "--threshold applies"),
])
def test_score_user_errors_are_one_line(machine_run, tmp_path, args, message):
    root, _ = machine_run
    (tmp_path / "empty").mkdir()
    names = {"empty": tmp_path / "empty", "normal": root / "normal", "anomalous": root / "anomalous"}
    result = CliRunner().invoke(main, ["score", *[a.format(**names) for a in args]])
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_score_never_writes_over_a_scored_file_and_leaves_nothing_when_it_fails(machine_run, tmp_path, monkeypatch):
    """score's CSV and plots go through a staging folder claimed at the end (audiovae.io.outputs.OutputFolder):
    an output named like a scored file is refused before any work, and a failure while scoring writes nothing."""
    root, run = machine_run
    victim = tmp_path / "take.wav"
    victim.write_bytes((root / "normal" / "normal_0.wav").read_bytes())
    before = victim.read_bytes()
    refused = CliRunner().invoke(main, ["score", str(victim), "--run", str(run), "--csv", str(tmp_path / "take.wav"),
                                        "--force", "-q"])
    assert refused.exit_code == 1 and "input" in refused.output and victim.read_bytes() == before, refused.output

    def broken(*args, **kwargs):
        raise RuntimeError("scoring failed halfway")

    monkeypatch.setattr(anomaly, "score_files", broken)
    failed = CliRunner().invoke(main, ["score", str(victim), "--run", str(run), "--csv", str(tmp_path / "out.csv"),
                                       "--plot", str(tmp_path / "plots"), "-q"])
    assert failed.exit_code != 0 and not (tmp_path / "out.csv").exists()
    assert not list((tmp_path / "plots").glob("*.png"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_plot_without_matplotlib_names_the_extra(machine_run, tmp_path, monkeypatch):
    root, run = machine_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = CliRunner().invoke(main, ["score", str(root / "normal"), "--run", str(run), "--plot", str(tmp_path)])
    assert result.exit_code == 1 and "pip install 'audiovae[plot]'" in result.output
