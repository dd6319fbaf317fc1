"""Files on disk, at the bottom of the package: atomic writes, audio files, checkpoints, locks, plots and the run folder's layout."""
