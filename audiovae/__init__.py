"""audiovae: learn generative models of sound with variational autoencoders."""

from audiovae.version import __version__

__all__ = ["Model", "__version__", "load"]


def __getattr__(name: str):
    # `audiovae.load` without importing torch for every CLI start-up
    if name in ("load", "Model"):
        from audiovae.synthesis import model as synth

        return getattr(synth, name)
    raise AttributeError(f"module 'audiovae' has no attribute {name!r}")
