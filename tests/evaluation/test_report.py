"""`audiovae report` on tiny trained runs: every file the page links is there and valid, the page refuses to be
overwritten without --force, --compare adds the second run's column, errors are one line, and the page loads
in a real (headless) Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import TINY_RATE, write_signal

import audiovae
from audiovae.cli.main import main
from audiovae.evaluation.report import training_curves
from audiovae.io.run_folder import RunFolder
from audiovae.training.vae_stage import train

SECONDS = 0.5  # prior samples and continuations: short, the page is what is tested
PCM16 = 1 / 32768
TINY_PRIOR = ("prior={kind: gru, hidden_size: 16, layers: 1, mixtures: 2, sequence_frames: 8, batch_size: 4, "
              "max_steps: 20, max_minutes: null, valid_every: 10, checkpoint_every: 10, log_every: 5}")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def invoke(*args):
    return CliRunner().invoke(main, ["report", *map(str, args)])


class Links(HTMLParser):
    """The src of every <audio> and <img>, and every column heading, in page order."""

    def __init__(self, text: str):
        super().__init__()
        self.audio: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self.in_heading = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "audio":
            self.audio.append(attrs["src"])
        elif tag == "img":
            self.images.append(attrs["src"])
        self.in_heading = tag == "th" and attrs.get("class") != "row"  # not a row's title

    def handle_endtag(self, tag):
        self.in_heading = False

    def handle_data(self, data):
        if self.in_heading and data.strip():
            self.headings.append(data.strip())


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; fails unless the file starts like a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def check_linked_files(folder: Path) -> Links:
    """Every audio file the page links is a WAV at the tiny rate with samples, every image a PNG with pixels."""
    links = Links((folder / "index.html").read_text(encoding="utf-8"))
    for name in links.audio:
        info = sf.info(str(folder / name))
        assert (info.format, info.samplerate, info.channels) == ("WAV", TINY_RATE, 1) and info.frames > 0, name
    for name in links.images:
        width, height = png_size(folder / name)
        assert width > 100 and height > 100, name
    return links


@pytest.fixture(scope="module")
def own_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run that this module may evaluate and write reports into."""
    copy = tmp_path_factory.mktemp("own") / "tiny"
    shutil.copytree(tiny_run, copy)
    for made_later in (RunFolder(copy).eval_dir, RunFolder(copy).report_dir):  # by tests that ran before this one
        shutil.rmtree(made_later, ignore_errors=True)
    return copy


@pytest.fixture(scope="module")
def prior_run(tiny_recipe, tmp_path_factory, torch_one_thread) -> Path:
    """The tiny VAE trained again with a tiny learned prior as its last stage."""
    result = train(tiny_recipe, overrides=(TINY_PRIOR,), runs_root=tmp_path_factory.mktemp("prior-runs"),
                   progress=False)
    assert result.prior is not None and result.prior.step == 20
    return result.run_dir


@pytest.fixture(scope="module")
def compare_page(prior_run, tiny_run, tmp_path_factory) -> Path:
    """A report of prior_run beside tiny_run, with a prompt: every kind of section the page has."""
    folder = tmp_path_factory.mktemp("compare")
    prompt = write_signal(folder / "prompt.wav", 0.4, TINY_RATE, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    result = invoke("--run", prior_run, "--compare", tiny_run, "-o", folder / "page", "--files", 2, "--samples", 2,
                    "--seconds", SECONDS, "--prompt", prompt, "-q")
    assert result.exit_code == 0, result.output
    return folder / "page"


def test_report_writes_a_page_whose_every_file_is_there_and_valid(tiny_run, tmp_path):
    out = tmp_path / "page"
    result = invoke("--run", tiny_run, "-o", out, "--files", 2, "--samples", 3, "--seconds", SECONDS)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out / 'index.html'}: 2 held-out files, 3 prior samples of {tiny_run}\n"
    assert "report" in result.stderr  # the progress bar
    links = check_linked_files(out)
    assert len(links.audio) == 2 * 2 + 3  # input and reconstruction per held-out file, then the prior samples
    assert len(links.images) == len(links.audio) + 1  # a spectrogram per sound, then the training curves
    for number in (1, 2):  # the reconstruction is as long as its input
        assert sf.info(str(out / f"heldout-{number}-input.wav")).frames == sf.info(str(out / f"heldout-{number}-a.wav")).frames
    model = audiovae.load(tiny_run, device="cpu")
    for i in range(3):  # sample i is the model's sample of seed i, at 16-bit resolution
        expected = model.generate(1, SECONDS, seed=i)[0]
        heard, _ = sf.read(str(out / f"sample-{i + 1}-a.wav"), dtype="float32")
        assert np.abs(heard - expected).max() <= PCM16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page"]  # nothing left beside it


def test_the_page_refuses_to_be_overwritten_and_shows_evaluate_once_it_has_run(own_run):
    run = RunFolder(own_run)
    first = invoke("--run", own_run, "--files", 1, "--samples", 1, "--seconds", SECONDS, "-q")
    assert first.exit_code == 0, first.output
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")  # RUN/report by default
    assert f"no measurements yet: <code>audiovae evaluate {own_run}</code>" in page
    assert 'class="numbers"' not in page

    again = invoke("--run", own_run, "--files", 1, "--samples", 1, "-q")
    assert again.exit_code == 1 and again.stdout == ""
    assert again.stderr == f"error: {run.report_dir}: already exists; pass --force to replace it\n"
    assert (run.report_dir / "index.html").read_text(encoding="utf-8") == page

    evaluated = CliRunner().invoke(main, ["evaluate", str(own_run), "-q", "--max-files", "1", "--no-perceptual"])
    assert evaluated.exit_code == 0, evaluated.output
    forced = invoke("--run", own_run, "--files", 1, "--samples", 0, "--force", "-q")
    assert forced.exit_code == 0, forced.output
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "no measurements yet" not in page and "Prior samples" not in page
    assert "<th>reconstruction</th><th>mel distance</th>" in page  # evaluate's table, as a table
    assert re.search(r"<td>mu-law at \d+ kbit/s</td>", page) and "<td>silence</td>" in page  # with its references
    assert not (run.report_dir / "sample-1-a.wav").exists()  # the old page's files went with it
    check_linked_files(run.report_dir)
    assert [p.name for p in own_run.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_compare_puts_the_second_run_in_a_second_column(compare_page, prior_run, tiny_run):
    links = check_linked_files(compare_page)
    page = (compare_page / "index.html").read_text(encoding="utf-8")
    both = [str(prior_run), str(tiny_run)]  # both runs are named 'tiny': the columns show their paths
    assert links.headings[:3] == ["input", *both]
    assert f"{prior_run} (learned prior)" in links.headings and f"{tiny_run} (N(0, I) prior)" in links.headings
    prompt = links.headings.index("prompt")  # evaluate's tables follow when a run has been evaluated
    assert links.headings[prompt : prompt + 3] == ["prompt", *both]
    for kind in ("heldout-1", "heldout-2", "sample-1", "sample-2", "continuation-1", "continuation-2"):
        assert f"{kind}-a.wav" in links.audio and f"{kind}-b.wav" in links.audio
    assert links.images.count("curves-a.png") == 1 and links.images.count("curves-b.png") == 1
    assert f"from {RunFolder(prior_run).metrics_path} and {RunFolder(prior_run).prior.metrics_path}" in page
    second = audiovae.load(tiny_run, device="cpu")  # the second column holds the second run's sounds, same seeds
    for i in range(2):
        heard, _ = sf.read(str(compare_page / f"sample-{i + 1}-b.wav"), dtype="float32")
        assert np.abs(heard - second.generate(1, SECONDS, seed=i)[0]).max() <= PCM16
    prompt = sf.info(str(compare_page / "prompt.wav")).frames
    assert sf.info(str(compare_page / "continuation-1-a.wav")).frames >= prompt + SECONDS * TINY_RATE


def test_training_curves_skip_a_line_cut_off_by_a_killed_run(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"split": "train", "step": 1, "loss": 3.0}\n{"split": "valid", "step": 2, "loss": 2.5, '
                   '"gaussian_nll": 4.0}\n{"split": "ranks", "step": 2}\n{"split": "train", "st')
    assert training_curves(log) == {"train": [(1, 3.0)], "valid": [(2, 2.5)], "N(0, I), valid": [(2, 4.0)]}
    assert training_curves(tmp_path / "absent.jsonl") == {}


@pytest.mark.parametrize("case", ["no run", "no dataset", "no matplotlib", "no prompt"])
def test_errors_are_one_line_naming_the_file_and_the_fix(case, tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "page"
    args: list = ["--run", tiny_run, "-o", out, "-q"]
    if case == "no run":
        args, expected = ["--run", tmp_path / "nowhere", "-o", out], f"{tmp_path / 'nowhere'}: no such run folder"
    elif case == "no dataset":
        args += ["--data", tmp_path / "gone"]
        expected = f"{tmp_path / 'gone'}: no manifest.json (run `audiovae prepare AUDIO_DIR` first)"
    elif case == "no matplotlib":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
        expected = "audiovae report needs matplotlib: pip install 'audiovae[plot]'"
    else:
        args += ["--prompt", tmp_path / "missing.wav"]
        expected = f"{tmp_path / 'missing.wav'}: "
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {expected}"), result.stderr
    assert not out.exists()


# ---- in a real browser ----------------------------------------------------------------------------------------

# Added to a test-only copy of the page: once the page has loaded, wait for every <audio> to load its metadata
# (or fail), then write what each audio and image reports into <pre id="browser-check"> for --dump-dom.
PROBE = """<script>
window.addEventListener("load", function () {
  var audios = Array.prototype.slice.call(document.querySelectorAll("audio"));
  var result = {audio: [], images: Array.prototype.slice.call(document.querySelectorAll("img")).map(
    function (img) { return {src: img.getAttribute("src"), naturalWidth: img.naturalWidth}; })};
  var left = audios.length;
  function report() {
    var pre = document.createElement("pre");
    pre.id = "browser-check";
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  }
  audios.forEach(function (audio) {
    var entry = {src: audio.getAttribute("src")};
    result.audio.push(entry);
    function settle(ok) {
      if ("ok" in entry) { return; }
      entry.ok = ok; entry.readyState = audio.readyState; entry.duration = audio.duration;
      entry.error = audio.error ? audio.error.code : null;
      left -= 1;
      if (left === 0) { report(); }
    }
    if (audio.readyState >= 1) { settle(true); }
    else if (audio.error) { settle(false); }
    else {
      audio.addEventListener("loadedmetadata", function () { settle(true); });
      audio.addEventListener("error", function () { settle(false); });
    }
  });
  if (audios.length === 0) { report(); }
  setTimeout(function () { if (left > 0) { left = -1; report(); } }, 10000);  // the unsettled have no "ok"
});
</script>
"""


CHROMIUM_MISSING = "Chromium is not installed (apt-get install chromium); only the listening page's browser test needs it"


@pytest.fixture(scope="module")
def chromium() -> str | None:
    """The Chromium binary. Where there is none the test skips before the page is made, except under CI, where
    it must run: there the test fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI", "").lower() in ("", "0", "false"):
        pytest.skip(CHROMIUM_MISSING)
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([binary, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_page_loads_in_a_real_browser(chromium, compare_page, tmp_path):
    if chromium is None:
        pytest.fail(f"CI is set and {CHROMIUM_MISSING[0].lower()}{CHROMIUM_MISSING[1:]}")
    page = compare_page / "index.html"
    links = Links(page.read_text(encoding="utf-8"))
    folder = tmp_path / "page"  # the probe goes into a copy: the report itself has no script
    shutil.copytree(compare_page, folder)
    (folder / "probe.html").write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                                       encoding="utf-8")
    dom = run_chromium(chromium, tmp_path / "profile", "--virtual-time-budget=30000", "--dump-dom",
                       (folder / "probe.html").as_uri()).stdout
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    assert found, "the probe wrote no results: " + dom[-500:]
    checked = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert [a["src"] for a in checked["audio"]] == links.audio and len(links.audio) == 2 * 3 + 2 * 2 + 1 + 2 * 2
    failed = [a for a in checked["audio"] if not (a.get("ok") and a["readyState"] >= 1 and a["duration"] > 0)]
    assert failed == []
    assert [i["src"] for i in checked["images"]] == links.images
    assert [i for i in checked["images"] if not i["naturalWidth"] > 0] == []

    shot = tmp_path / "screenshot.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
                 "--virtual-time-budget=10000", page.as_uri())
    assert png_size(shot) == (1280, 2000) and shot.stat().st_size > 50_000  # a page of pictures, not a blank one
