"""`audiovae prepare`: a folder of recordings becomes a memory-mappable training set with a manifest.

Layout of a dataset folder:

    manifest.json   settings, per-file records, skipped files, array shapes
    train.f32       float32, C order, shape manifest["splits"]["train"]["shape"]
    valid.f32       the same for the held-out files

Each worker reads one file, resamples, normalizes, cuts and filters segments, and writes them to a part
file; the main process appends the parts in a fixed order, so the result does not depend on the number
of workers. Everything is built in a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiovae.compute.threads import available_cpus
from audiovae.config.data import DataConfig
from audiovae.data.labels import check_labels, label_counts, read_labels, stratified_splits
from audiovae.data.manifest import DATASET_FORMAT, SPLITS, build_manifest, display, exact_bytes, manifest_path
from audiovae.errors import UserError
from audiovae.io.atomic import atomic_directory, file_sha256, is_disk_full, write_json_atomic
from audiovae.io.audio import (
    AUDIO_EXTENSIONS,
    AudioReadError,
    audio_errors,
    audio_info,
    db,
    normalization_gain,
    read_blocks,
)
from audiovae.io.outputs import check_replaceable_folder, recognized_by

STREAM_SECONDS = 600.0  # longer files are read twice in blocks instead of held in memory
BLOCK_SECONDS = 30.0


@dataclass(frozen=True)
class SourceFile:
    """One input file: which input root it was found under and its path relative to that root."""

    input_index: int
    path: Path  # absolute
    relative: str


@dataclass(frozen=True)
class PrepareResult:
    """What prepare wrote."""

    output: Path
    files: int
    skipped: int
    hours: float
    segments: dict[str, int]
    manifest: dict[str, Any]
    labels: dict[str, dict[str, int]] | None = None  # label -> files, train and valid segments (--labels)


def find_audio(inputs: list[Path]) -> list[SourceFile]:
    """Audio files under each input (a folder, searched recursively, or a single file), in a fixed order."""
    found: list[SourceFile] = []
    for index, root in enumerate(inputs):
        if root.is_file():
            found.append(SourceFile(index, root.resolve(), root.name))
            continue
        if not root.is_dir():
            raise UserError(f"{display(root)}: no such folder")
        # followlinks=False: a symlinked folder is not entered, so a link loop cannot hang the scan.
        for folder, dirs, files in os.walk(root, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("._"):
                    path = Path(folder) / name
                    found.append(SourceFile(index, path.absolute(), path.relative_to(root).as_posix()))
    return found


def assign_splits(files: list[SourceFile], valid_fraction: float, seed: int) -> list[str]:
    """Split by source file: a file's segments all land in one split.

    Files are ordered by a hash of (seed, input, path), so the choice is fixed for a seed and does not
    depend on the order the files were found in; the first round(n * valid_fraction) go to valid
    (at least one when the fraction is positive and there are two or more files).
    """
    if not files:
        return []
    keys = [hashlib.sha256(f"{seed}\0{f.input_index}\0{f.relative}".encode("utf-8", "surrogateescape")).hexdigest()
            for f in files]
    order = sorted(range(len(files)), key=keys.__getitem__)
    count = round(len(files) * valid_fraction)
    if valid_fraction > 0 and len(files) >= 2:
        count = min(max(count, 1), len(files) - 1)
    splits = ["train"] * len(files)
    for position in order[:count]:
        splits[position] = "valid"
    return splits


def segment_starts(length: int, segment: int, hop: int) -> list[int]:
    """Start offsets of the segments cut from `length` samples.

    Full segments every `hop` samples; the last, partial one is kept (zero-padded) when at least half a
    segment of audio remains after the previous start, so a file shorter than a segment but at least
    half as long yields one padded segment:

        |<- segment ->|
        [=============][=============][=======......]   last: >= segment/2 real samples, padded
        0             hop            2 hop
    """
    starts = list(range(0, max(length - segment, -1) + 1, hop)) if length >= segment else []
    next_start = starts[-1] + hop if starts else 0
    covered = starts[-1] + segment if starts else 0
    if covered < length and length - next_start >= math.ceil(segment / 2):
        starts.append(next_start)
    return starts


class Segmenter:
    """Cuts a stream of samples into the segments `segment_starts` describes, holding at most about one
    segment plus one pushed block in memory."""

    def __init__(self, segment: int, hop: int):
        self.segment, self.hop = segment, hop
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0  # stream position of buffer[0]
        self.next_start = 0
        self.length = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add samples (time,); return the full segments now complete, (count, segment)."""
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])
        self.length += len(samples)
        out = []
        while self.next_start + self.segment <= self.length:
            start = self.next_start - self.offset
            out.append(self.buffer[start : start + self.segment])
            self.next_start += self.hop
        segments = np.stack(out) if out else np.zeros((0, self.segment), np.float32)
        keep = self.next_start - self.offset
        self.buffer, self.offset = self.buffer[keep:].copy(), self.next_start
        return segments

    def finish(self) -> np.ndarray:
        """The zero-padded last segment, if the tail rule of `segment_starts` keeps one: (0 or 1, segment)."""
        covered = self.next_start - self.hop + self.segment if self.next_start else 0
        if covered < self.length and self.length - self.next_start >= math.ceil(self.segment / 2):
            tail = np.zeros((1, self.segment), np.float32)
            rest = self.buffer[self.next_start - self.offset :]
            tail[0, : len(rest)] = rest
            return tail
        return np.zeros((0, self.segment), np.float32)


def _cut_stream(cutter: Segmenter, blocks, gain: np.float32):
    """Segments block by block, then the padded tail: only one block's segments exist at a time."""
    for block in blocks:
        yield cutter.push(block * gain)
    yield cutter.finish()


def cut_segments(samples: np.ndarray, segment: int, hop: int) -> np.ndarray:
    """samples (time,) -> segments (count, segment), zero-padding the last partial one."""
    cutter = Segmenter(segment, hop)
    return np.concatenate([cutter.push(samples), cutter.finish()])


def process_file(task: tuple[SourceFile, DataConfig, str]) -> dict[str, Any]:
    """Worker: read, resample, normalize, segment, drop silence, write a part file.

    Returns a record for the manifest; a file that cannot be used returns {"skip": reason}.
    Never raises: one bad file must not stop the run.
    """
    source, data, part_path = task
    try:
        return _process(source, data, Path(part_path))
    except MemoryError:
        return {"skip": "too large to load into memory"}
    except Exception as error:  # noqa: BLE001 - any failure skips this file, with its reason
        if is_disk_full(error, Path(part_path).parent):
            raise  # not this file's fault: every later file would fail too, so stop the whole run
        return {"skip": f"unexpected error: {type(error).__name__}: {error}"}


def _process(source: SourceFile, data: DataConfig, part_path: Path) -> dict[str, Any]:
    try:
        size = source.path.stat().st_size
    except OSError as error:
        return {"skip": f"cannot open ({error.strerror})"}
    if size == 0:
        return {"skip": "empty file (0 bytes)"}
    try:
        with audio_errors():
            found_rate, header_frames = audio_info(source.path)
            if header_frames == 0:
                return {"skip": "no audio samples (zero-length)"}
            long_file = header_frames / found_rate > STREAM_SECONDS
            # pass 1: level statistics of the resampled signal (short files keep it for pass 2)
            peak, squares, resampled, frames, bad, kept = 0.0, 0.0, 0, 0, 0, []
            for raw, block in read_blocks(source.path, data.sample_rate, BLOCK_SECONDS):
                frames += len(raw)
                bad += int(np.count_nonzero(~np.isfinite(raw)))
                if bad:
                    continue
                if block.size:
                    peak = max(peak, float(np.max(np.abs(block))))
                    # np.square + sum, not np.dot: BLAS threads in every worker process fight over the cores
                    squares += float(np.square(block, dtype=np.float64).sum())
                    resampled += len(block)
                if not long_file:
                    kept.append(block)
            if bad:
                return {"skip": f"contains {bad} NaN or infinite samples"}
        content_hash = file_sha256(source.path)
    except AudioReadError as error:
        return {"skip": str(error)}
    except OSError as error:  # reading the bytes for the hash
        return {"skip": f"cannot open ({error.strerror or error})"}
    if frames == 0 or resampled == 0:
        return {"skip": "no audio samples (zero-length)"}
    duration = frames / found_rate
    segment = data.segment_samples
    if resampled < math.ceil(segment / 2):
        return {"skip": f"too short ({duration:.3f} s; a segment is {segment / data.sample_rate:.3f} s, "
                        f"at least half of one is needed)"}
    gain = np.float32(normalization_gain(peak, math.sqrt(squares / resampled), data.normalization, data.level_db))
    # pass 2: normalize, cut, drop silent segments, write
    threshold = 10.0 ** (data.silence_db / 20.0)
    cutter = Segmenter(segment, data.segment_hop)
    blocks = iter(kept) if not long_file else (b for _, b in read_blocks(source.path, data.sample_rate, BLOCK_SECONDS))
    representation = data.representation
    stored = silent = 0
    loudest = 0.0
    with open(part_path, "wb") as part:
        for segments in _cut_stream(cutter, blocks, gain):
            if not len(segments):
                continue
            rms = np.sqrt(np.mean(np.square(segments, dtype=np.float64), axis=1))
            loudest = max(loudest, float(rms.max()))
            loud = rms >= threshold
            silent += int((~loud).sum())
            if loud.any():
                chosen = segments[loud]
                chosen = representation.items_from_audio(chosen)
                chosen.astype(np.float32, copy=False).tofile(part)
                stored += int(loud.sum())
    if stored == 0:
        part_path.unlink(missing_ok=True)
        return {"skip": f"silent (every segment below {data.silence_db:g} dBFS; loudest {db(loudest):.1f} dBFS)"}
    return {
        "duration_seconds": round(duration, 6),
        "sample_rate": found_rate,
        "segments": stored,
        "silent_segments": silent,
        "sha256": content_hash,
    }


# a dataset prepare wrote before output folders carried a marker, recognized by its manifest
EARLIER_DATASET = recognized_by("manifest.json", DATASET_FORMAT, ["manifest.json", *(f"{s}.f32" for s in SPLITS)])


def _check_output(inputs: list[Path], output: Path, force: bool) -> None:
    resolved = output.resolve()
    for root in inputs:
        base = root.resolve()
        if root.is_dir() and (resolved == base or base in resolved.parents):
            raise UserError(f"{display(output)}: the output folder is inside the input folder {display(root)}; "
                            "audiovae never writes into input folders, choose another -o")
        if resolved in base.parents:
            raise UserError(f"{display(output)}: the input {display(root)} is inside the output folder, which "
                            "--force would replace; choose another -o")
    check_replaceable_folder(output, force, EARLIER_DATASET)


def prepare(
    inputs: list[str | os.PathLike],
    output: str | os.PathLike,
    data: DataConfig,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    labels: str | None = None,
) -> PrepareResult:
    """Turn folders of audio into a dataset folder at `output` (see the module docstring).

    labels: 'folders' or a CSV of path,label (audiovae.data.labels); the split is then stratified by label.

    Bad files are skipped with a warning on stderr and listed in the manifest. Raises UserError when
    nothing usable is found, when `output` exists without `force`, or when it lies inside an input.
    """
    from tqdm import tqdm

    roots = [Path(p) for p in inputs]
    output = Path(output)
    _check_output(roots, output, force)
    files, repeated = _unique(find_audio(roots))
    if repeated:
        print(f"warning: {repeated} files were found twice (repeated or nested inputs); each is used once, "
              "so no file lands in both train and valid", file=sys.stderr)
    if not files:
        raise UserError(f"no audio files ({', '.join(e[1:] for e in AUDIO_EXTENSIONS)}) found in "
                        f"{', '.join(display(r) for r in roots)}")
    names = read_labels(labels, files) if labels else None
    if names is not None:
        check_labels(names, labels)
        splits = stratified_splits(files, names, data.valid_fraction, data.split_seed, assign_splits)
    else:
        splits = assign_splits(files, data.valid_fraction, data.split_seed)
    workers = max(1, min(workers or available_cpus(), len(files)))

    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    counts = {split: 0 for split in SPLITS}
    seconds = 0.0
    try:
        with atomic_directory(output, force=force, inputs=roots, command="prepare", legacy=EARLIER_DATASET) as tmp:
            parts = tmp / "parts"
            parts.mkdir()
            handles = {split: open(tmp / f"{split}.f32", "wb") for split in SPLITS}
            tasks = [(f, data, str(parts / f"{i:07d}.f32")) for i, f in enumerate(files)]
            bar = tqdm(total=len(files), unit="file", desc="prepare", disable=not progress, file=sys.stderr)
            try:
                for index, (source, split, task, result) in enumerate(zip(files, splits, tasks, run_tasks(tasks, workers),
                                                                          strict=True)):
                    bar.update(1)
                    where = {"input": source.input_index, "path": display(source.relative)}
                    if (exact := exact_bytes(source.relative)) is not None:
                        where["path_bytes"] = exact
                    if "skip" in result:
                        skipped.append({**where, "reason": result["skip"]})
                        tqdm.write(f"warning: skipped {display(source.path)}: {result['skip']}", file=sys.stderr)
                        continue
                    part = Path(task[2])
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, handles[split], 1 << 22)
                    part.unlink()
                    records.append({**where, **result, "split": split, "first_segment": counts[split],
                                    **({"label": names[index]} if names is not None else {})})
                    counts[split] += result["segments"]
                    seconds += result["duration_seconds"]
                    bar.set_postfix(hours=f"{seconds / 3600:.2f}", skipped=len(skipped))
            finally:
                bar.close()
                for handle in handles.values():
                    handle.close()
            shutil.rmtree(parts)
            if not records:
                raise UserError(
                    f"no usable audio in {', '.join(display(r) for r in roots)}: all {len(files)} files were "
                    "skipped (reasons above)"
                )
            if names is not None:
                check_labels([r["label"] for r in records], f"{labels} (after skipped files)")
            manifest = build_manifest(roots, data, records, skipped, counts, seconds)
            write_json_atomic(manifest_path(tmp), manifest)
    except FileExistsError:
        raise UserError(f"{display(output)}: a folder appeared there while prepare ran; it is kept as it is: "
                        "choose another -o") from None
    except WorkerDied as died:
        held = ", ".join(display(files[i].path) for i in died.indices[:4]) + (", ..." if len(died.indices) > 4 else "")
        raise UserError(f"a prepare worker process died (killed by the system, most often for lack of memory) "
                        f"while it read one of {held}; nothing was written to {display(output)}. Re-run with "
                        "--workers 1 (one file in memory at a time) or with fewer workers") from None
    return PrepareResult(output, len(records), len(skipped), seconds / 3600, counts, manifest,
                         label_counts(records) if names is not None else None)


class WorkerDied(Exception):
    """A worker process ended without a result (killed by the system, most often for memory) while it held
    the tasks at `indices`: a multiprocessing Pool would wait for their results for ever."""

    def __init__(self, indices: list[int]):
        super().__init__(indices)
        self.indices = indices


def run_tasks(tasks: list, workers: int, function=None):
    """Results of `function` (default process_file) over tasks, in task order, from this process or from a pool
    of worker processes with at most two tasks a worker in flight. Raises WorkerDied when a worker dies."""
    function = function or process_file
    if workers == 1:
        yield from map(function, tasks)
        return
    # forkserver: workers start from a clean process, safe even when the caller already uses torch threads.
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),))
    pending, queue = deque(), iter(enumerate(tasks))
    try:
        while True:
            while len(pending) < 2 * workers and (item := next(queue, None)) is not None:
                pending.append((item[0], pool.submit(function, item[1])))
            if not pending:
                return
            try:
                result = pending[0][1].result()
            except BrokenProcessPool:
                raise WorkerDied([index for index, _ in pending]) from None
            pending.popleft()
            yield result
    finally:  # an error or an interrupt: queued tasks are dropped, running ones end with their workers
        pool.shutdown(wait=True, cancel_futures=True)


def exit_with_parent(parent: int) -> None:
    """In a worker: exit when `parent` is gone (killed without its cleanup), instead of waiting for tasks for ever.
    POSIX only (on Windows, signal 0 would be a CTRL_C_EVENT)."""
    if os.name != "posix":
        return

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except (ProcessLookupError, PermissionError):  # gone, or its pid now another user's process
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="audiovae-parent-watch").start()


def _unique(files: list[SourceFile]) -> tuple[list[SourceFile], int]:
    """The first of each set of found files that are one file on disk (same real path), and how many
    repeats were dropped: `prepare a a` or `prepare data data/speech` would otherwise use a file twice,
    possibly once in each split."""
    seen: set[str] = set()
    unique = []
    for source in files:
        key = os.path.realpath(source.path)
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, len(files) - len(unique)
