"""audiovae: learn generative models of sound with variational autoencoders."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `audiovae.load` without importing torch for every CLI start-up
    if name in ("load", "Model"):
        from audiovae import synth

        return getattr(synth, name)
    raise AttributeError(f"module 'audiovae' has no attribute {name!r}")
