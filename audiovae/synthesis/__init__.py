"""Synthesis from a trained run: the loaded Model, generation of any length, whole files on disk, latent files."""
