"""Signal processing below the models: torchaudio transforms, phase rules and spectral distances."""
