"""The series of one study, each with a thumbnail, a checkbox and a View button.

Thumbnails load in the background, one task per series, and only land if the study is still the
one shown. A server without ``/thumbnail`` gets ``/rendered`` (the client falls back by itself);
a server without rendering at all gets the middle instance's first frame decoded and rendered
here, so every DICOMweb server shows pictures.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..client import wado
from ..client.derived import dataset_from_json
from ..client.segmentation import referenced_series
from ..dicom import dicomjson
from ..errors import DicomWebError
from ..pixels.render import thumbnail as render_thumbnail
from ..pixels.voi import DisplayError, ImageAttributes
from ._tasks import UI_LOCK, Generation, StatusBar, TaskRunner
from .table import format_value

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = ["SeriesList", "series_thumbnail", "SERIES_FIELDS"]

SERIES_FIELDS = ["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances", "SeriesDate",
                 "BodyPartExamined"]
THUMBNAIL_SIZE = 96
# Series made from other series (segmentations, structure sets, reports): listed right after their source.
DERIVED_MODALITIES = ("SEG", "RTSTRUCT", "SR")
MAX_SERIES_SHOWN = 200
# A light grey square with a dash, for series still loading or without images.
_PLACEHOLDER_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96"><rect width="96" height="96" '
                    b'fill="#eee"/><text x="48" y="54" font-size="14" text-anchor="middle" fill="#999">'
                    b"%s</text></svg>")


def _placeholder(text: str) -> bytes:
    return _PLACEHOLDER_SVG % html.escape(text).encode()


def series_thumbnail(client: Client, study: str, series: str, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of a small picture of a series: the server's thumbnail or rendering, else rendered here."""
    import io

    try:
        image = client.thumbnail(study, series, size=size)
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()
    except DicomWebError as exc:
        if exc.status in (401, 403) or exc.status is None:
            raise  # no answer, or no access: rendering here would fail the same way
    # No rendering on the server: decode the middle instance's first frame here.
    instances = client.instances(study, series, fields=["InstanceNumber", "Rows"], raw=True)
    images = [obj for obj in instances if dicomjson.first(obj, "Rows") is not None] or instances
    if not images:
        raise DisplayError("the series has no instances")
    images.sort(key=lambda obj: float(dicomjson.first(obj, "InstanceNumber", 0) or 0))
    sop = str(dicomjson.first(images[len(images) // 2], "SOPInstanceUID"))
    meta = client.metadata(study, series, sop, raw=True)[0]
    frame = wado.fetch_frames(client.source, study, series, sop, 1, metadata=meta, max_workers=1)[0]
    return render_thumbnail(frame, ImageAttributes.from_json(meta), size, media_type="image/png")


def _derived_sources(client: Client, study: str, found: pd.DataFrame) -> dict[str, str]:
    """For each SEG, RTSTRUCT and SR series of a study listing: the series it was made from (first instance's header)."""
    out: dict[str, str] = {}
    if "Modality" not in found.columns:
        return out
    for record in found[found["Modality"].isin(DERIVED_MODALITIES)].to_dict("records"):
        uid = str(record["SeriesInstanceUID"])
        try:
            metas = client.source.retrieve_metadata(study, uid)
        except DicomWebError:
            continue
        for meta in metas[:1]:
            ds = dataset_from_json(meta)
            target = referenced_series(ds)
            if target is None:  # a report: its evidence names the series it measured
                for evidence in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
                    for item in evidence.get("ReferencedSeriesSequence", []):
                        if str(item.SeriesInstanceUID) != uid:
                            target = (study, str(item.SeriesInstanceUID))
                            break
            if target is not None and target[1] != uid:
                out[uid] = target[1]
    return out


def _next_to_sources(found: pd.DataFrame, derived_of: dict[str, str]) -> pd.DataFrame:
    """The listing reordered so that each derived series follows the series it was made from."""
    if not derived_of:
        return found
    uids = found["SeriesInstanceUID"].astype(str).tolist()
    present = set(uids)
    order: list[int] = []
    placed: set[int] = set()

    def place(index: int) -> None:
        if index in placed:
            return
        placed.add(index)
        order.append(index)
        for child, uid in enumerate(uids):
            if derived_of.get(uid) == uids[index]:
                place(child)

    for index, uid in enumerate(uids):
        if derived_of.get(uid) not in present:  # a source, or derived from a series not in this study
            place(index)
    for index in range(len(uids)):
        place(index)
    return found.iloc[order].reset_index(drop=True)


class SeriesList(widgets.VBox):
    """The series of the study given to ``show_study``; ``on_view(callback)`` gets ``(study, series)``."""

    def __init__(self, runner: TaskRunner, status: StatusBar):
        self.runner = runner
        self.status = status
        self.client: Client | None = None
        self.study: str | None = None
        self.data = pd.DataFrame(columns=["SeriesInstanceUID", *SERIES_FIELDS])
        self.selected_keys: list[str] = []
        self.active_key: str | None = None
        self.thumbnails: dict[str, bytes] = {}
        self.thumbnail_errors: dict[str, str] = {}
        self.derived_of: dict[str, str] = {}  # SEG / RTSTRUCT / SR series -> the series it was made from
        self._generation = Generation()
        self._view_callbacks: list[Callable[[str, str], None]] = []
        self._rows: dict[str, tuple[widgets.Image, widgets.Checkbox, widgets.Button, widgets.HTML]] = {}
        self.title = widgets.HTML("<b>Series</b> <i>(open a study)</i>")
        self.title.add_class("dwnb-series-title")
        self._list = widgets.VBox(layout=widgets.Layout(max_height="620px", overflow_y="auto", width="340px"))
        super().__init__([self.title, self._list])
        self.add_class("dwnb-series")

    def on_view(self, callback: Callable[[str, str], None]) -> None:
        self._view_callbacks.append(callback)

    def clear(self) -> None:
        self._generation.next()
        with UI_LOCK:
            self.client, self.study = None, None
            self.data = self.data.iloc[0:0]
            self.selected_keys, self.active_key = [], None
            self._rows = {}
            self._list.children = ()
            self.title.value = "<b>Series</b> <i>(open a study)</i>"

    def show_study(self, client: Client, study: str, label: str = "") -> None:
        """List the series of ``study`` (QIDO-RS in the background), then load their thumbnails."""
        token = self._generation.next()
        with UI_LOCK:
            self.client, self.study = client, study
            self.selected_keys, self.active_key = [], None
            self.thumbnails, self.thumbnail_errors = {}, {}
            self._rows = {}
            self._list.children = ()
            self.title.value = f"<b>Series</b> of {html.escape(label or study)} <i>loading&hellip;</i>"
        self.runner.submit(self._load, token, client, study, label)

    def _load(self, token: int, client: Client, study: str, label: str) -> None:
        found = client.series(study, fields=SERIES_FIELDS)
        if not self._generation.is_current(token):
            return
        if "SeriesNumber" in found.columns and len(found):
            found = found.sort_values("SeriesNumber", na_position="last", kind="stable").reset_index(drop=True)
        derived_of = _derived_sources(client, study, found)
        found = _next_to_sources(found, derived_of)
        shown = found.iloc[:MAX_SERIES_SHOWN]
        with UI_LOCK:
            if not self._generation.is_current(token):
                return
            self.data = found
            self.derived_of = derived_of
            rows = [self._row(record) for record in shown.to_dict("records")]
            self._list.children = rows
            more = f" (first {MAX_SERIES_SHOWN} shown)" if len(found) > MAX_SERIES_SHOWN else ""
            self.title.value = (f"<b>Series</b> of {html.escape(label or study)}: {len(found)}{more}"
                                if len(found) else f"<b>Series</b> of {html.escape(label or study)}: none")
        for uid in shown["SeriesInstanceUID"] if len(shown) else []:
            self.runner.submit(self._load_thumbnail, token, client, study, str(uid),
                               on_error=functools.partial(self._thumbnail_failed, token, str(uid)))

    def _row(self, record: dict[str, Any]) -> widgets.Widget:
        uid = str(record["SeriesInstanceUID"])
        image = widgets.Image(value=_placeholder("..."), format="svg+xml",
                              layout=widgets.Layout(width=f"{THUMBNAIL_SIZE}px", height=f"{THUMBNAIL_SIZE}px",
                                                    object_fit="contain"))
        image.add_class("dwnb-thumbnail")
        checkbox = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="22px"),
                                    tooltip="select this series for retrieve")
        checkbox.add_class("dwnb-series-check")
        checkbox.observe(lambda change, uid=uid: self._on_check(uid, change["new"]), "value")
        button = widgets.Button(description="View", icon="eye", layout=widgets.Layout(width="80px"))
        button.add_class("dwnb-series-view")
        button.on_click(lambda _b, uid=uid: self.view(uid))
        number = format_value(record.get("SeriesNumber"))
        description = format_value(record.get("SeriesDescription")) or "(no description)"
        modality = format_value(record.get("Modality"))
        count = format_value(record.get("NumberOfSeriesRelatedInstances"))
        of = ""
        source = self.derived_of.get(uid)
        if source is not None:
            of = " &#8627; of another series"
            if "SeriesNumber" in self.data:
                numbers = self.data.loc[self.data["SeriesInstanceUID"] == source, "SeriesNumber"]
                if len(numbers):
                    of = f" &#8627; of #{html.escape(format_value(numbers.iloc[0]))}"
        text = widgets.HTML(f"<b>{html.escape(modality)}</b> #{html.escape(number)}{of}<br>{html.escape(description)}"
                            f"<br><span style='color:#666'>{html.escape(count)} instances</span>",
                            layout=widgets.Layout(width="150px", margin="0 0 0 16px" if source else "0"))
        text.add_class("dwnb-series-text")
        self._rows[uid] = (image, checkbox, button, text)
        row = widgets.HBox([checkbox, image, widgets.VBox([text, button])],
                           layout=widgets.Layout(align_items="center", border_bottom="1px solid #eee"))
        row.add_class("dwnb-series-row")
        return row

    def _load_thumbnail(self, token: int, client: Client, study: str, series: str) -> None:
        if not self._generation.is_current(token):
            return
        png = series_thumbnail(client, study, series)
        with UI_LOCK:
            if not self._generation.is_current(token) or series not in self._rows:
                return
            self.thumbnails[series] = png
            image = self._rows[series][0]
            image.format = "png"
            image.value = png

    def _thumbnail_failed(self, token: int, series: str, exc: BaseException) -> None:
        with UI_LOCK:
            if not self._generation.is_current(token) or series not in self._rows:
                return
            self.thumbnail_errors[series] = str(exc)
            image = self._rows[series][0]
            image.format = "svg+xml"
            image.value = _placeholder("no image")

    def _on_check(self, uid: str, value: bool) -> None:
        if value and uid not in self.selected_keys:
            self.selected_keys = [*self.selected_keys, uid]
        elif not value and uid in self.selected_keys:
            self.selected_keys = [k for k in self.selected_keys if k != uid]

    def select(self, uids: list[str]) -> None:
        """Check these series (replacing the selection)."""
        unknown = [u for u in uids if u not in self._rows]
        if unknown:
            raise KeyError(f"no series {unknown[0]!r} in the study shown")
        with UI_LOCK:
            for uid, (_, checkbox, _, _) in self._rows.items():
                checkbox.value = uid in uids
            self.selected_keys = list(uids)

    @property
    def selected(self) -> pd.DataFrame:
        if not self.selected_keys:
            return self.data.iloc[0:0]
        return self.data[self.data["SeriesInstanceUID"].isin(self.selected_keys)]

    def view(self, uid: str) -> None:
        """Open a series in the viewer (as its View button does)."""
        if uid not in self._rows or self.study is None:
            raise KeyError(f"no series {uid!r} in the study shown")
        with UI_LOCK:
            self.active_key = uid
            for key, (_, _, button, _) in self._rows.items():
                button.button_style = "info" if key == uid else ""
        for callback in self._view_callbacks:
            callback(self.study, uid)
