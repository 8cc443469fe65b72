"""Notebook widgets built on the DICOMweb client: ``Browser`` (servers, search, series, viewer,
retrieve and upload) and ``Viewer`` (one series or volume), working with any DICOMweb server."""

from .browser import Browser
from .servers import ServerPicker
from .table import Column, DataTable
from .viewer import Viewer

__all__ = ["Browser", "Viewer", "DataTable", "Column", "ServerPicker"]
