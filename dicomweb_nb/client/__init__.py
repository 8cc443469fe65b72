"""The DICOMweb client for notebooks: ``connect`` gives a ``Client``.

``Client`` speaks to a ``DicomWebSource`` - ``WebSource`` for any server over HTTP, or
``StoreSource`` in-process for the workspace store - and turns answers into DataFrames, numpy arrays,
volumes, pydicom Datasets and PIL images.
"""

from ..protocol import DicomWebSource, EncodedFrame, RenderedImage, StowItem
from .client import Client
from .config import RemoteServer, load_servers, lookup_server, parse_servers, remove_server, save_server, store_folder
from .connect import connect
from .dataframes import to_dataframe
from .http import HttpClient
from .local import StoreSource
from .web import WebSource

__all__ = [
    "connect", "Client", "to_dataframe", "DicomWebSource", "WebSource", "HttpClient", "EncodedFrame", "RenderedImage",
    "StowItem", "RemoteServer", "load_servers", "lookup_server", "parse_servers", "save_server", "remove_server",
    "store_folder", "StoreSource",
]
