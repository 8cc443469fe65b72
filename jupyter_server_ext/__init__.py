"""jupyter-server extension: serves the workspace store over DICOMweb at ``<base_url>dicom-web/``
(and WADO-URI at ``<base_url>wado``), behind Jupyter's authentication and Authorizer (resource
``dicomweb``: read, write, execute; see ``dicomweb_nb.server.access``).

Enabled by installing the package (``jupyter-config/jupyter_server_config.d/jupyter_server_ext.json``).
Configure with ``c.DicomWeb.*`` in ``jupyter_server_config.py``; see ``dicomweb_nb.server.config``.
"""

from __future__ import annotations

from typing import Any

from .extension import DicomWebExtension


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "jupyter_server_ext", "app": DicomWebExtension}]
