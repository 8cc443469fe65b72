"""The DICOMweb server: tornado handlers for PS3.18 services over the workspace store, mounted by
the jupyter-server extension or run standalone by ``dicomweb-nb serve``."""

from .app import make_app, make_context, url_path_join
from .config import DicomWeb

__all__ = ["make_app", "make_context", "url_path_join", "DicomWeb"]
