#!/usr/bin/env python3
"""Build the bundled demo speech corpus (synthetic English speech).

Synthesizes a fixed list of original sentences with espeak-ng, using a
seeded choice of voice, variant, pitch and speed per sentence, then
resamples to 16 kHz mono 16-bit PCM (soxr 'HQ') and trims (or zero-pads)
leading/trailing silence to 50 ms.

Run from the repository root:

    python data/make_demo.py

Output: data/demo/utt_NNN_<voice>_<variant>.wav (existing WAVs there are
replaced). Needs the `espeak-ng` program plus numpy, soundfile and soxr.
Output is byte-identical across runs for the same espeak-ng version.
"""

import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SEED = 20240607
TARGET_SR = 16000
KEEP_SILENCE_S = 0.050   # silence kept at each end after trimming
TRIM_THRESHOLD_DB = -40  # relative to the clip's peak
OUT_DIR = Path(__file__).resolve().parent / "demo"

VOICES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
VARIANTS = ["m1", "m3", "m7", "f2", "f4", "f5", "klatt", "klatt3"]
PITCHES = [30, 40, 50, 60, 70]
SPEEDS = [140, 155, 170, 185]

# Original sentences written for this project (released under CC0-1.0).
SENTENCES = [
    "Good morning, everyone.",
    "Please close the door.",
    "The kettle is already boiling.",
    "We walked along the river until the sun went down behind the hills.",
    "Seven small boats were tied to the old wooden pier.",
    "Could you pass me the salt, please?",
    "It rained all night long.",
    "The library opens at nine and closes at six on weekdays.",
    "My grandmother kept a notebook full of recipes that nobody else could read.",
    "Turn left at the bakery.",
    "When the old ferry reached the island, the passengers stepped onto the dock and looked around for somewhere warm to eat.",
    "A cold wind blew across the empty field.",
    "The train to the coast leaves from platform four in twenty minutes.",
    "Where did you put the keys?",
    "She painted the fence a bright shade of yellow.",
    "Numbers can tell a story, but only if someone listens carefully.",
    "Thank you very much for coming.",
    "The children built a castle of sand and waited for the tide to take it.",
    "Fresh bread smells better than almost anything else in the world.",
    "He forgot his umbrella again.",
    "If you follow the path past the church and cross the stone bridge, you will find the cottage at the edge of the woods.",
    "The meeting has been moved to Thursday afternoon.",
    "A quiet street at dawn can feel like a different city.",
    "Yes, I think so.",
    "Our neighbour grows tomatoes, beans, and far too many courgettes.",
    "The clock in the hall stopped at a quarter past three.",
    "Bring a warm coat; the evenings are chilly in the mountains.",
    "Nobody answered the phone.",
    "The small dog barked at every bicycle that rolled past the gate.",
    "Let us begin with the first page.",
    "The soup needs a little more pepper.",
    "After the storm, the beach was covered with shells and tangled seaweed.",
    "I will call you tomorrow.",
    "Four friends shared one umbrella and still arrived completely soaked.",
    "The report explained how the town had changed over fifty years, from a small fishing village into a busy place full of shops.",
    "Please write your name at the top of the page.",
    "A good question is often worth more than a quick answer.",
    "The bus was late, so we walked.",
    "Old photographs fade slowly, like the memories they were meant to keep.",
    "Is this seat taken?",
    "The market sells apples, pears, honey, and cheese every Saturday morning.",
    "He read the letter twice before folding it back into the envelope.",
    "Keep calm and carry on.",
    "What time does the film start?",
    "Mountains look closer than they really are on a clear day.",
    "The cat slept in a patch of warm sunlight.",
    "Nine out of ten people prefer tea in the afternoon.",
    "We ran out of milk.",
    "The bridge was painted red so that ships could see it through the fog.",
    "See you soon, and travel safely.",
    "A flock of geese flew south in a long uneven line.",
    "The teacher wrote a single word on the board and waited.",
    "Thick clouds gathered over the harbour as the fishing boats came home.",
    "I like the blue one better.",
    "Snow fell softly on the roofs of the sleeping village.",
    "Do not forget to water the plants.",
    "Before leaving the house, she checked the windows, fed the cat, and wrote a short note for her brother.",
    "The museum keeps a collection of clocks, compasses, and old brass telescopes.",
    "Somewhere a radio was playing a song I almost remembered.",
    "That sounds like a wonderful idea.",
    "The path through the forest was narrow, muddy, and full of roots.",
    "Heavy rain is expected later this evening.",
    "Wait here for a moment, please.",
    "The baker wakes up at four to prepare the first loaves of the day.",
    "Stars are easier to see far away from the lights of the town.",
    "Happy birthday to you.",
    "She counted the coins twice and found exactly enough for the ticket home.",
    "And that is the end of the story.",
]


def synthesize(text, voice, variant, pitch, speed, tmp):
    """Run espeak-ng into a WAV file and return (float32 mono samples, rate)."""
    wav = Path(tmp) / "tts.wav"
    cmd = ["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch),
           "-s", str(speed), "-w", str(wav), text]
    subprocess.run(cmd, check=True)
    audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def trim(audio, sr):
    """Cut leading/trailing silence so that KEEP_SILENCE_S remains at each end."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (TRIM_THRESHOLD_DB / 20))
    keep = int(round(KEEP_SILENCE_S * sr))
    start = max(0, loud[0] - keep)
    end = min(len(audio), loud[-1] + 1 + keep)
    # espeak-ng sometimes leaves less than `keep` at an end: pad with zeros.
    head = keep - (loud[0] - start)
    tail = keep - (end - loud[-1] - 1)
    return np.pad(audio[start:end], (head, tail))


def version():
    out = subprocess.run(["espeak-ng", "--version"], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def main():
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found (Debian: apt-get install espeak-ng)")
    rng = random.Random(SEED)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.wav"):
        old.unlink()

    durations, total_bytes = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            voice = rng.choice(VOICES)
            variant = rng.choice(VARIANTS)
            pitch = rng.choice(PITCHES)
            speed = rng.choice(SPEEDS)
            audio, sr = synthesize(text, voice, variant, pitch, speed, tmp)
            if sr != TARGET_SR:
                audio = soxr.resample(audio, sr, TARGET_SR, quality="HQ")
            audio = np.clip(trim(audio, TARGET_SR), -1.0, 1.0)
            path = OUT_DIR / f"utt_{i:03d}_{voice}_{variant}.wav"
            sf.write(str(path), audio, TARGET_SR, subtype="PCM_16")
            durations.append(len(audio) / TARGET_SR)
            total_bytes += path.stat().st_size

    d = np.array(durations)
    print(version())
    print(f"files: {len(d)}  total: {d.sum():.1f} s ({d.sum() / 60:.2f} min)  "
          f"min/max: {d.min():.2f}/{d.max():.2f} s  "
          f"size: {total_bytes / 1e6:.2f} MB -> {OUT_DIR}")


if __name__ == "__main__":
    main()
