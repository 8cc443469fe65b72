"""An image viewer for a series or a volume: frame slider, window/level presets and sliders, key tags.

Pixels are decoded here, in the kernel (``Client.frames``: whatever transfer syntax the server
stores), and rendered with ``pixels.voi``/``pixels.render`` into a PNG for an ``ipywidgets.Image``,
so the viewer works with any DICOMweb server, with or without server-side rendering.

Frames are fetched in the background as they are asked for; when the slider moves faster than
frames arrive, only the newest request is rendered (a stale one is dropped). Decoded frames are
kept in a small LRU cache, and the neighbours of the shown frame are prefetched.
"""

from __future__ import annotations

import functools
import html
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..client import wado
from ..dicom import dicomjson
from ..pixels.render import encode_image, render_image
from ..pixels.voi import CT_WINDOW_PRESETS, DisplayError, ImageAttributes, Window, default_window
from ..pixels.volume import Volume
from ._tasks import UI_LOCK, StatusBar, TaskRunner, log
from .overlays import OVERLAY_PALETTE, SegmentationOverlays

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = ["Viewer", "PRESETS", "FrameRef", "OVERLAY_PALETTE"]

# The window choices: the image's own VOI, the frame's full range, and CT presets (HU).
PRESETS = ("Image", "Auto", "Soft tissue", "Lung", "Bone", "Brain", "Custom")
_PRESET_WINDOWS = {"Soft tissue": CT_WINDOW_PRESETS["soft_tissue"], "Lung": CT_WINDOW_PRESETS["lung"],
                   "Bone": CT_WINDOW_PRESETS["bone"], "Brain": CT_WINDOW_PRESETS["brain"]}
TAG_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyDescription",
                "AccessionNumber", "Modality", "SeriesNumber", "SeriesDescription", "InstanceNumber",
                "ImagePositionPatient", "SliceLocation", "SliceThickness", "PixelSpacing", "Rows", "Columns",
                "NumberOfFrames", "PhotometricInterpretation", "BitsStored", "RescaleSlope", "RescaleIntercept",
                "WindowCenter", "WindowWidth", "Manufacturer", "SOPInstanceUID")
_CACHE_FRAMES = 96
_EMPTY_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="256" height="128"><rect width="256" height="128" '
              b'fill="#f4f4f4"/><text x="128" y="68" font-size="14" text-anchor="middle" fill="#888">'
              b"no series shown</text></svg>")
_PREFETCH = 6


@dataclass(frozen=True)
class FrameRef:
    """Where frame ``index`` of the viewer comes from: an instance and its 1-based frame number."""

    sop_instance_uid: str
    frame: int
    meta_index: int


def _instance_sort_key(meta: dict) -> tuple:
    number = dicomjson.first(meta, "InstanceNumber")
    try:
        number = float(number)
    except (TypeError, ValueError):
        number = float("inf")
    position = dicomjson.values(meta, "ImagePositionPatient")
    orientation = dicomjson.values(meta, "ImageOrientationPatient")
    along_normal = 0.0
    if len(position) == 3 and len(orientation) == 6:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        along_normal = float(np.dot(np.asarray(position, float), normal))
    return number, along_normal, str(dicomjson.first(meta, "SOPInstanceUID", ""))


def _tag_text(meta: dict, keyword: str) -> str:
    elem = dicomjson.element(meta, keyword)
    texts = dicomjson.value_texts(elem)
    out = []
    for text in texts:
        try:
            number = float(text)
            out.append(f"{number:.6g}" if not number.is_integer() else str(int(number)))
        except ValueError:
            out.append(text)
    return "\\".join(out)


def _stored_range(attrs: ImageAttributes) -> tuple[float, float]:
    """The modality values the stored bits can hold (the window sliders' span)."""
    bits = max(1, min(attrs.bits_stored, 32))
    if attrs.pixel_representation:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2 ** bits - 1
    a = low * attrs.rescale_slope + attrs.rescale_intercept
    b = high * attrs.rescale_slope + attrs.rescale_intercept
    return (a, b) if a <= b else (b, a)


class Viewer(SegmentationOverlays, widgets.VBox):
    """View a series from a DICOMweb server, or a ``Volume`` / numpy array, frame by frame.

    ``Viewer(client, study, series)`` or ``Viewer(volume)``. ``size`` is the largest side of the
    shown image in pixels (``None`` for the native size). Change what is shown with
    ``show_frame(index)`` (0-based), ``set_preset("Lung")``, ``set_window(center, width)``; read it
    back from ``frame_index``, ``window``, ``displayed`` (the 8-bit pixels) and ``image.value``
    (PNG bytes). ``volume()`` and ``frames()`` give the data for analysis.

    Segmentations (DICOM SEG, RTSTRUCT) of the shown series are found and overlaid by themselves
    (``segmentations=False`` turns that off); ``add_segmentation(seg)`` adds one (also over a
    ``Volume`` on its grid). Each segment has a toggle in the side panel, coloured as the SEG
    recommends; ``overlay_opacity`` sets how strongly they cover the image.
    """

    def __init__(self, source: Client | Volume | np.ndarray | None = None, study: str | None = None,
                 series: str | None = None, *, size: int | None = 512, runner: TaskRunner | None = None,
                 status: StatusBar | None = None, segmentations: bool = True):
        self.size = size
        self.find_segmentations = segmentations
        self.status = status or StatusBar()
        self._owns_runner = runner is None
        self.runner = runner or TaskRunner(self.status, max_workers=3, name="dicomweb-nb-viewer")
        self.client: Client | None = None
        self.study: str | None = None
        self.series: str | None = None
        self._volume: Volume | None = None
        self._array: np.ndarray | None = None
        self.metadata: list[dict] = []
        self.refs: list[FrameRef] = []
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, ImageAttributes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._loading: set[int] = set()
        self._request_lock = threading.Lock()
        self._version = 0
        self._rendering = False
        self._source_token = 0
        self._syncing = False
        self.window: Window | None = None
        self.preset = "Image"
        self.frame_index = 0
        self.frame_array: np.ndarray | None = None
        self.frame_attrs: ImageAttributes | None = None
        self.displayed: np.ndarray | None = None

        self.image = widgets.Image(value=_EMPTY_SVG, format="svg+xml",
                                   layout=widgets.Layout(min_width="128px", min_height="128px", border="1px solid #ddd"))
        self.image.add_class("dwnb-image")
        self.frame_slider = widgets.IntSlider(value=1, min=1, max=1, description="Frame", continuous_update=True,
                                              layout=widgets.Layout(width="100%"))
        self.frame_slider.add_class("dwnb-frame-slider")
        self.frame_slider.observe(self._on_frame_slider, "value")
        self.preset_buttons = widgets.ToggleButtons(options=list(PRESETS), value="Image",
                                                    style={"button_width": "74px"},
                                                    tooltips=["the image's own window", "full range of the frame",
                                                              "W 400 L 40", "W 1500 L -600", "W 1800 L 400",
                                                              "W 80 L 40", "set with the sliders"])
        self.preset_buttons.add_class("dwnb-presets")
        self.preset_buttons.observe(self._on_preset, "value")
        self.center_slider = widgets.FloatSlider(description="Level", min=-1024, max=3071, value=40, step=1,
                                                 continuous_update=False, layout=widgets.Layout(width="100%"))
        self.width_slider = widgets.FloatSlider(description="Window", min=1, max=4096, value=400, step=1,
                                                continuous_update=False, layout=widgets.Layout(width="100%"))
        self.center_slider.add_class("dwnb-level")
        self.width_slider.add_class("dwnb-window")
        self.center_slider.observe(self._on_window_slider, "value")
        self.width_slider.observe(self._on_window_slider, "value")
        self.tags = widgets.HTML(layout=widgets.Layout(width="300px", max_height="560px", overflow_y="auto"))
        self.tags.add_class("dwnb-tags")
        self.caption = widgets.HTML()
        self.caption.add_class("dwnb-caption")
        self._build_overlay_panel()
        controls = widgets.VBox([self.frame_slider, self.preset_buttons, self.center_slider, self.width_slider],
                                layout=widgets.Layout(width="100%"))
        left = widgets.VBox([self.image, self.caption, controls], layout=widgets.Layout(flex="1 1 auto"))
        children: list[widgets.Widget] = [widgets.HBox([left, widgets.VBox([self.overlay_panel, self.tags])])]
        if status is None:
            children.insert(0, self.status)
        super().__init__(children)
        self.add_class("dwnb-viewer")
        if isinstance(source, (Volume, np.ndarray)):
            self.show_volume(source)
        elif source is not None:
            if study is None or series is None:
                raise ValueError("Viewer(client, study, series): give the study and series UIDs with a client")
            self.show_series(source, study, series)

    # -- what to show --------------------------------------------------------------------------------
    def show_volume(self, volume: Volume | np.ndarray) -> None:
        """Show a Volume (modality values, e.g. HU) or an array of frames ``(n, rows, columns[, 3])``."""
        array = volume.array if isinstance(volume, Volume) else np.asarray(volume)
        if array.ndim == 2:
            array = array[None]
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (3, 4)):
            raise DisplayError(f"a volume is (frames, rows, columns) or (frames, rows, columns, 3), got {array.shape}")
        with UI_LOCK:
            self._source_token += 1
            self.client, self.study, self.series = None, None, None
            self._volume = volume if isinstance(volume, Volume) else None
            self._array = array
            self.metadata = []
            self.refs = []
            self._clear_segmentations()
            with self._cache_lock:
                self._cache.clear()
            colour = array.ndim == 4
            attrs = ImageAttributes(rows=array.shape[1], columns=array.shape[2],
                                    photometric_interpretation="RGB" if colour else "MONOCHROME2",
                                    samples_per_pixel=3 if colour else 1, bits_allocated=8 * array.dtype.itemsize,
                                    bits_stored=8 * array.dtype.itemsize,
                                    pixel_representation=int(array.dtype.kind in "if"))
            self._volume_attrs = attrs
            finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            self._set_window_range(low, high)
            self._set_frame_count(array.shape[0])
            self.preset_buttons.value = "Auto" if self.preset == "Image" else self.preset
            self.tags.value = self._volume_tags()
        self._request_render()

    def show_series(self, client: Client, study: str, series: str) -> None:
        """Show a series of a DICOMweb server: its metadata first (in the background), then frames as asked."""
        with UI_LOCK:
            self._source_token += 1
            token = self._source_token
            self.client, self.study, self.series = client, study, series
            self._volume, self._array = None, None
            self.metadata, self.refs = [], []
            self._clear_segmentations()
            with self._cache_lock:
                self._cache.clear()
            self.image.format = "svg+xml"
            self.image.value = _EMPTY_SVG
            self.caption.value = "<i>loading the series&hellip;</i>"
            self.tags.value = ""
        self.runner.submit(self._load_series, token, client, study, series)

    def _load_series(self, token: int, client: Client, study: str, series: str) -> None:
        self.status.show("loading the series metadata…", "busy")
        found = client.metadata(study, series, raw=True)
        images = [m for m in found if dicomjson.first(m, "Rows") is not None and dicomjson.first(m, "Columns")]
        if token != self._source_token:
            return
        if not images:
            with UI_LOCK:
                self.caption.value = "<i>this series has no images</i>"
                self._set_frame_count(1)
            self.status.show(f"series {series} has no image instances ({len(found)} other instances)", "info")
            return
        images.sort(key=_instance_sort_key)
        refs: list[FrameRef] = []
        for index, meta in enumerate(images):
            count = int(dicomjson.first(meta, "NumberOfFrames", 1) or 1)
            refs.extend(FrameRef(str(dicomjson.first(meta, "SOPInstanceUID")), frame, index)
                        for frame in range(1, count + 1))
        with UI_LOCK:
            if token != self._source_token:
                return
            self.metadata, self.refs = images, refs
            first_attrs = self._attributes(0, refs[0])
            if first_attrs.is_grayscale:
                self._set_window_range(*_stored_range(first_attrs))
            self._set_frame_count(len(refs))
        self.status.show(f"{len(images)} instances, {len(refs)} frames", "ok")
        self._request_render()
        if self.find_segmentations:
            self.runner.submit(self._load_segmentations, token, client, study, series)

    @property
    def frame_count(self) -> int:
        if self._array is not None:
            return int(self._array.shape[0])
        return len(self.refs)

    def _set_frame_count(self, count: int) -> None:
        self._syncing = True
        try:
            middle = max(1, count // 2 + (1 if count % 2 else 0)) if count > 2 else 1
            self.frame_slider.max = max(1, count)
            self.frame_slider.value = middle
            self.frame_index = middle - 1
            self.frame_slider.disabled = count <= 1
        finally:
            self._syncing = False

    def _set_window_range(self, low: float, high: float) -> None:
        span = max(high - low, 1.0)
        # Presets may lie outside the data's range (a lung window on an MR): keep them reachable.
        preset_low = min(w.center for w in _PRESET_WINDOWS.values())
        preset_high = max(w.center for w in _PRESET_WINDOWS.values())
        self._syncing = True
        try:
            self.center_slider.min = -1e12
            self.center_slider.max = 1e12
            self.center_slider.min = min(low - span / 2, preset_low)
            self.center_slider.max = max(high + span / 2, preset_high)
            self.width_slider.min = 1
            self.width_slider.max = max(2 * span, max(w.width for w in _PRESET_WINDOWS.values()))
            step = 1.0 if span > 50 else span / 200
            self.center_slider.step = self.width_slider.step = step
        finally:
            self._syncing = False

    # -- controls -----------------------------------------------------------------------------------
    def show_frame(self, index: int) -> None:
        """Show frame ``index`` (0-based, in series order)."""
        count = self.frame_count
        if not 0 <= index < max(count, 1):
            raise IndexError(f"frame {index} is outside 0..{count - 1}")
        self.frame_slider.value = index + 1  # the observer renders

    def set_preset(self, name: str) -> None:
        """``"Image"`` (the DICOM window), ``"Auto"`` (full range), ``"Soft tissue"``, ``"Lung"``, ``"Bone"``, ``"Brain"``."""
        match = {p.lower().replace(" ", "_"): p for p in PRESETS}.get(name.strip().lower().replace(" ", "_").replace("-", "_"))
        if match is None or match == "Custom":
            raise ValueError(f"no window preset {name!r}; presets: {', '.join(PRESETS[:-1])}")
        if self.preset_buttons.value == match:
            self._apply_preset(match)
        else:
            self.preset_buttons.value = match

    def set_window(self, center: float, width: float) -> None:
        """A free window: ``center`` (level) and ``width`` in modality units (HU for CT)."""
        window = Window(center, width)  # validates (DisplayError for a width below 1)
        self._syncing = True
        try:
            self.preset_buttons.value = "Custom"
            self._put_sliders(window)
        finally:
            self._syncing = False
        self.preset = "Custom"
        self.window = window
        self._request_render()

    def _put_sliders(self, window: Window) -> None:
        if window.center < self.center_slider.min:
            self.center_slider.min = window.center
        if window.center > self.center_slider.max:
            self.center_slider.max = window.center
        if window.width > self.width_slider.max:
            self.width_slider.max = window.width
        self.center_slider.value = window.center
        self.width_slider.value = max(window.width, self.width_slider.min)

    def _on_frame_slider(self, change: dict) -> None:
        if self._syncing:
            return
        self.frame_index = int(change["new"]) - 1
        self._request_render()

    def _on_preset(self, change: dict) -> None:
        if self._syncing:
            return
        self._apply_preset(change["new"])

    def _apply_preset(self, name: str) -> None:
        self.preset = name
        if name == "Custom":
            self.window = Window(self.center_slider.value, max(self.width_slider.value, 1))
        elif name in _PRESET_WINDOWS:
            self.window = _PRESET_WINDOWS[name]
        else:
            self.window = None  # "Image" and "Auto" depend on the frame: chosen when rendering
        self._request_render()

    def _on_window_slider(self, change: dict) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.preset_buttons.value = "Custom"
        finally:
            self._syncing = False
        self.preset = "Custom"
        self.window = Window(self.center_slider.value, max(self.width_slider.value, 1))
        self._request_render()

    # -- frames -------------------------------------------------------------------------------------
    def _attributes(self, index: int, ref: FrameRef) -> ImageAttributes:
        meta = self.metadata[ref.meta_index]
        try:
            return ImageAttributes.from_json(meta, frame_index=ref.frame - 1)
        except DisplayError:
            # LUT or palette data given by BulkDataURI: read them from the instance itself.
            assert self.client is not None and self.study and self.series
            ds = self.client.instance(self.study, self.series, ref.sop_instance_uid)
            return ImageAttributes.from_dataset(ds, frame_index=ref.frame - 1)

    def get_frame(self, index: int) -> tuple[np.ndarray, ImageAttributes]:
        """Frame ``index`` (0-based) as stored values and its display attributes (fetched and cached)."""
        with UI_LOCK:  # one consistent view of the source, even if another series is being opened
            token, array, refs, metadata = self._source_token, self._array, self.refs, self.metadata
            client, study, series = self.client, self.study, self.series
        with self._cache_lock:
            if (token, index) in self._cache:
                self._cache.move_to_end((token, index))
                return self._cache[(token, index)]
        if array is not None:
            frame, attrs = array[index], self._volume_attrs
        else:
            if not refs or client is None or not study or not series:
                raise DisplayError("no series is loaded")
            ref = refs[index]
            # The metadata is at hand: Client.frames would ask for it again with every frame.
            frame = wado.fetch_frames(client.source, study, series, ref.sop_instance_uid, ref.frame,
                                      metadata=metadata[ref.meta_index], max_workers=1)[0]
            attrs = self._attributes(index, ref)
        with self._cache_lock:
            if token == self._source_token:  # a frame of a series no longer shown is not kept
                self._cache[(token, index)] = (frame, attrs)
                while len(self._cache) > _CACHE_FRAMES:
                    self._cache.popitem(last=False)
        return frame, attrs

    def _request_render(self) -> None:
        with self._request_lock:
            self._version += 1
            if self._rendering:
                return  # the running loop sees the new version and renders again
            self._rendering = True
        self.runner.submit(self._render_loop, on_error=self._render_failed)

    def _render_failed(self, exc: BaseException) -> None:
        with self._request_lock:
            self._rendering = False
        self.status.error(exc)

    def _render_loop(self) -> None:
        while True:
            with self._request_lock:
                version = self._version
            token = self._source_token
            try:
                if self.frame_count:
                    self._render_once(version, token)
            except Exception as exc:  # noqa: BLE001 - shown in the status line; newer requests still render
                # A failure for a source no longer shown (another series opened meanwhile) is moot.
                if token == self._source_token:
                    log.debug("rendering failed", exc_info=True)
                    self.runner.errors.append(exc)
                    self.status.error(exc)
            with self._request_lock:
                if version == self._version:
                    self._rendering = False
                    return

    def _choose_window(self, frame: np.ndarray, attrs: ImageAttributes) -> Window | None:
        if self.preset == "Auto":
            return default_window(frame, attrs)
        if self.preset == "Image":
            if attrs.windows or attrs.voi_luts:
                return None  # to_display applies the image's own VOI (window or VOI LUT)
            return default_window(frame, attrs)
        return self.window

    def _render_once(self, version: int, token: int) -> None:
        index = min(self.frame_index, self.frame_count - 1)
        frame, attrs = self.get_frame(index)
        window = self._choose_window(frame, attrs)
        image = render_image(frame, attrs, window=window, viewport=(self.size, self.size) if self.size else None)
        image = self._overlay(image, index)
        png = encode_image(image, "image/png")
        shown = window if window is not None else (attrs.windows[0] if attrs.windows else None)
        with UI_LOCK:
            if version != self._version or token != self._source_token:
                return  # a newer request is pending: its render replaces this one
            self.frame_array, self.frame_attrs = frame, attrs
            self.displayed = np.asarray(image)
            self.image.format = "png"
            self.image.value = png
            if shown is not None and attrs.is_grayscale and self.preset != "Custom":
                self._syncing = True
                try:
                    self._put_sliders(shown)
                finally:
                    self._syncing = False
            self.center_slider.disabled = self.width_slider.disabled = not attrs.is_grayscale
            window_text = (f"W {shown.width:g} L {shown.center:g}" if shown is not None else
                           ("VOI LUT" if attrs.voi_luts else "colour"))
            self.caption.value = (f'<span class="dwnb-caption-text">frame {index + 1} of {self.frame_count} &middot; '
                                  f"{attrs.columns}&times;{attrs.rows} &middot; {html.escape(self.preset)} "
                                  f"{html.escape(window_text)}</span>")
            if self.metadata:
                self.tags.value = self._tags_html(index)
        self._prefetch(index, token)

    def _prefetch(self, index: int, token: int) -> None:
        if self._array is not None or not self.refs:
            return
        wanted = [i for d in range(1, _PREFETCH + 1) for i in (index + d, index - d) if 0 <= i < len(self.refs)]
        with self._cache_lock:
            wanted = [i for i in wanted if (token, i) not in self._cache and i not in self._loading]
            self._loading.update(wanted)
        for i in wanted:
            self.runner.submit(self._prefetch_one, i, token, on_error=functools.partial(self._prefetch_failed, i))

    def _prefetch_failed(self, index: int, _exc: BaseException) -> None:
        self._loading.discard(index)

    def _prefetch_one(self, index: int, token: int) -> None:
        try:
            if token == self._source_token:
                self.get_frame(index)
        finally:
            self._loading.discard(index)

    # -- tags -----------------------------------------------------------------------------------------
    def _tags_html(self, index: int) -> str:
        ref = self.refs[index]
        meta = self.metadata[ref.meta_index]
        rows = []
        for keyword in TAG_KEYWORDS:
            text = _tag_text(meta, keyword)
            if text:
                rows.append(f'<tr><td style="color:#666;padding-right:8px">{keyword}</td>'
                            f'<td class="dwnb-tag-{keyword}">{html.escape(text)}</td></tr>')
        if int(dicomjson.first(meta, "NumberOfFrames", 1) or 1) > 1:
            rows.insert(0, f'<tr><td style="color:#666">Frame</td><td>{ref.frame}</td></tr>')
        return f'<table style="font-size:12px;line-height:1.3">{"".join(rows)}</table>'

    def _volume_tags(self) -> str:
        array = self._array
        assert array is not None
        rows = [("Frames", array.shape[0]), ("Rows", array.shape[1]), ("Columns", array.shape[2]),
                ("dtype", array.dtype)]
        if self._volume is not None:
            rows += [("Spacing (mm)", ", ".join(f"{s:.4g}" for s in self._volume.spacing)),
                     ("Origin (mm)", ", ".join(f"{s:.4g}" for s in self._volume.origin)),
                     ("Modality values", "yes" if self._volume.rescaled else "stored values")]
        body = "".join(f'<tr><td style="color:#666;padding-right:8px">{html.escape(str(k))}</td>'
                       f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f'<table style="font-size:12px">{body}</table>'

    # -- data for the notebook ---------------------------------------------------------------------
    @property
    def current_instance(self) -> str | None:
        """SOP Instance UID of the shown frame (None for a volume)."""
        if not self.refs:
            return None
        return self.refs[min(self.frame_index, len(self.refs) - 1)].sop_instance_uid

    def volume(self, **kwargs: Any) -> Volume:
        """The shown series as a ``Volume`` (``Client.volume``; modality values), or the volume given."""
        if self._volume is not None:
            return self._volume
        if self._array is not None:
            raise DisplayError("this viewer shows a plain array, not a Volume: use frames()")
        if self.client is None or not self.study or not self.series:
            raise DisplayError("no series is shown")
        kwargs.setdefault("progress", False)
        return self.client.volume(self.study, self.series, **kwargs)

    def frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Frames (0-based indices in series order; all by default) stacked as stored values."""
        count = self.frame_count
        if count == 0:
            raise DisplayError("nothing is shown")
        chosen = list(range(count)) if indices is None else [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < count]
        if bad:
            raise IndexError(f"frames {bad} are outside 0..{count - 1}")
        if self._array is not None:
            return self._array[chosen]
        return np.stack([self.get_frame(i)[0] for i in chosen])

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Wait for background loading and rendering to finish (for scripts and tests)."""
        return self.runner.wait(timeout)

    def close(self) -> None:
        if self._owns_runner:
            self.runner.shutdown()
        super().close()
