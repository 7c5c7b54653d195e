"""Model discovery: turning folders and config files into a desired state."""

from servekit.repository.discovery import discover

__all__ = ["discover"]
