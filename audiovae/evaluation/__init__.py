"""Measuring a trained run: reconstruction, perceptual quality, latent health, generation and speed."""
