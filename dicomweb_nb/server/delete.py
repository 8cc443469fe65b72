"""Deleting a study, series or instance: ``DELETE {root}/studies/{s}[/series/{se}[/instances/{i}]]``.

Not a PS3.18 transaction; the form of Azure's DICOM service and dcm4chee: 204 No Content once every
instance is gone, 404 naming what is not there. The index rows go in one transaction, which records
``delete`` entries in the change feed; the blobs become garbage that reads already under way may
still finish with, then are swept (``Store.delete``). Metadata and thumbnails are computed from the
index rows, so nothing of the instance is served afterwards. Needs ``write`` (``access.py``).
"""

from __future__ import annotations

import logging

from .base import DicomWebMixin

log = logging.getLogger("dicomweb_nb.server.delete")
_NAMES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class DeleteMixin(DicomWebMixin):
    """``delete()`` of the study, series and instance URLs."""

    async def delete(self, *uids: str) -> None:
        study, series, instance = ([self.uid(u, name) for u, name in zip(uids, _NAMES)] + [None, None])[:3]
        assert study is not None
        count = await self.run_blocking(self.store.delete, study, series, instance)
        what = (f"instance {instance}" if instance else f"series {series}" if series else f"study {study}")
        log.info("deleted %s (%d instance%s)", what, count, "" if count == 1 else "s")
        self.set_status(204)
        self.finish()
