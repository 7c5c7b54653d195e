"""servekit: one Python model server for every model, behind the APIs clients already call."""

__version__ = "0.1.0"

__all__ = ["__version__"]
