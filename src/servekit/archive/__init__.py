"""TorchServe model archives (``.mar``): writing them (``servekit archive``),
unpacking them safely and the model store they live in."""

from servekit.archive.manifest import Manifest
from servekit.archive.reader import open_archive
from servekit.archive.writer import ArchiveSpec, write_archive

__all__ = ["ArchiveSpec", "Manifest", "open_archive", "write_archive"]
