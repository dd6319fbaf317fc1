"""Training: the shared loop and state, loss terms, the adversarial stage, run logs, and the VAE and prior stages."""
