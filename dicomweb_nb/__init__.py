"""dicomweb-nb: DICOMweb for Jupyter.

>>> import dicomweb_nb as dw
>>> pacs = dw.connect("http://localhost:8042/dicom-web")   # doctest: +SKIP
>>> pacs.studies(PatientName="DOE*")                       # doctest: +SKIP

``connect`` gives a ``Client`` (searches as DataFrames, frames and volumes as numpy, STOW with
a progress bar); ``to_dataframe`` turns any DICOM JSON into a DataFrame; ``errors`` holds the
exception hierarchy (``errors.DicomWebError`` and its subclasses); ``cache`` is the local frame
cache of lazy volumes (``dw.cache.info()``, ``dw.cache.clear()``) and ``progress()`` shows a bar
for dask computations. ``Browser`` and ``Viewer`` are the
notebook widgets (search, view, retrieve and upload; one series or volume).

The public names are loaded on first use, so the server and the pure ``dicom``/``pixels``
modules can be imported without pulling in pandas and requests.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "connect": ("dicomweb_nb.client.connect", "connect"),
    "Client": ("dicomweb_nb.client.client", "Client"),
    "to_dataframe": ("dicomweb_nb.client.dataframes", "to_dataframe"),
    "DicomWebError": ("dicomweb_nb.errors", "DicomWebError"),
    "Volume": ("dicomweb_nb.pixels.volume", "Volume"),
    "Segmentation": ("dicomweb_nb.client.segmentation", "Segmentation"),
    "Deidentifier": ("dicomweb_nb.dicom.deidentify", "Deidentifier"),
    "errors": ("dicomweb_nb.errors", None),
    "cache": ("dicomweb_nb.client.cache", None),
    "progress": ("dicomweb_nb.client.lazy", "progress"),
    "import_files": ("dicomweb_nb.store.importer", "import_files"),
    "Browser": ("dicomweb_nb.widgets.browser", "Browser"),
    "Viewer": ("dicomweb_nb.widgets.viewer", "Viewer"),
}

__all__ = ["connect", "import_files", "Client", "to_dataframe", "errors", "DicomWebError", "Volume", "Segmentation",
           "Deidentifier", "Browser", "Viewer", "cache", "progress", "__version__"]

if TYPE_CHECKING:
    from . import errors
    from .client import cache
    from .client.client import Client
    from .client.connect import connect
    from .client.dataframes import to_dataframe
    from .client.lazy import progress
    from .client.segmentation import Segmentation
    from .dicom.deidentify import Deidentifier
    from .errors import DicomWebError
    from .pixels.volume import Volume
    from .store.importer import import_files
    from .widgets.browser import Browser
    from .widgets.viewer import Viewer


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dicomweb_nb' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
