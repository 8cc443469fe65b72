"""Segmentation overlays of the viewer: DICOM SEG / RTSTRUCT masks blended over the shown frames.

``SegmentationOverlays`` is the part of ``Viewer`` (``viewer.py``) that finds the segmentations of
the shown series, keeps one toggle per segment in a side panel and blends the visible ones into each
rendered frame; the viewer calls ``_build_overlay_panel`` once, ``_clear_segmentations`` when the
source changes and ``_overlay`` on each rendered frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from ..client.segmentation import Segmentation, segmentation_series
from ..pixels.voi import DisplayError
from ._tasks import UI_LOCK, StatusBar

if TYPE_CHECKING:
    from ..client.client import Client
    from .viewer import FrameRef

__all__ = ["OVERLAY_PALETTE", "SegmentationOverlays"]

# Segment colours where a SEG recommends none (RGB).
OVERLAY_PALETTE = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 220, 220))


class SegmentationOverlays:
    """Segment overlays for a frame viewer (the ``Viewer`` widget mixes this in)."""

    # What the viewer provides.
    status: StatusBar
    refs: list[FrameRef]
    _array: np.ndarray | None
    _source_token: int

    if TYPE_CHECKING:
        def _request_render(self) -> None: ...

    def _build_overlay_panel(self) -> None:
        """The segment toggles and the opacity slider, in a side panel shown once a segmentation is added."""
        self.segmentations: list[Segmentation] = []
        self._segment_slices: list[dict[tuple[str, int], int]] = []
        self.segment_visible: dict[tuple[int, int], bool] = {}
        self.segment_toggles = widgets.VBox([])
        self.segment_toggles.add_class("dwnb-segments")
        self.overlay_opacity = widgets.FloatSlider(description="Opacity", min=0.0, max=1.0, step=0.05, value=0.5,
                                                   continuous_update=False, layout=widgets.Layout(width="290px"))
        self.overlay_opacity.add_class("dwnb-overlay-opacity")
        self.overlay_opacity.observe(lambda _change: self._request_render(), "value")
        self.overlay_panel = widgets.VBox([widgets.HTML("<b>Segmentations</b>"), self.segment_toggles, self.overlay_opacity],
                                          layout=widgets.Layout(display="none", width="300px"))
        self.overlay_panel.add_class("dwnb-overlays")

    def _load_segmentations(self, token: int, client: Client, study: str, series: str) -> None:
        for seg_study, seg_series, sop in segmentation_series(client, study, series):
            if token != self._source_token:
                return
            try:
                seg = client.segmentation(seg_study, seg_series, sop)
            except Exception as exc:  # noqa: BLE001 - one unreadable SEG must not hide the others
                self.status.show(f"segmentation {sop} cannot be shown: {exc}", "error")
                continue
            with UI_LOCK:
                if token == self._source_token:
                    self.add_segmentation(seg)

    def _clear_segmentations(self) -> None:
        self.segmentations, self._segment_slices, self.segment_visible = [], [], {}
        self.segment_toggles.children = ()
        self.overlay_panel.layout.display = "none"

    def add_segmentation(self, seg: Segmentation) -> None:
        """Overlay a ``Segmentation`` (``pacs.segmentation(...)``) on the shown series or volume."""
        if self._array is not None:
            if seg.masks.shape[1:] != self._array.shape[:3]:
                raise DisplayError(f"the segmentation's grid {seg.masks.shape[1:]} is not the shown volume's "
                                   f"{self._array.shape[:3]}")
        elif not set(seg.keys) & {(ref.sop_instance_uid, ref.frame) for ref in self.refs}:
            raise DisplayError("the segmentation was not drawn on the series shown")
        number = len(self.segmentations)
        self.segmentations.append(seg)
        self._segment_slices.append({key: k for k, key in enumerate(seg.keys)})
        toggles = list(self.segment_toggles.children)
        for row, record in enumerate(seg.segments.to_dict("records")):
            self.segment_visible[(number, row)] = True
            red, green, blue = self.segment_colour(number, row)
            box = widgets.Checkbox(value=True, indent=False, description=str(record["SegmentLabel"] or record["SegmentNumber"]),
                                   layout=widgets.Layout(width="240px"))
            box.add_class("dwnb-segment-toggle")
            box.observe(lambda change, key=(number, row): self._on_segment_toggle(key, change["new"]), "value")
            swatch = widgets.HTML(f'<span style="display:inline-block;width:14px;height:14px;margin-top:4px;'
                                  f'background:rgb({red},{green},{blue})"></span>')
            toggles.append(widgets.HBox([swatch, box]))
        self.segment_toggles.children = toggles
        self.overlay_panel.layout.display = "flex"
        self._request_render()

    def segment_colour(self, segmentation: int, row: int) -> tuple[int, int, int]:
        """The overlay colour of a segment: the SEG's recommended colour, else one of ``OVERLAY_PALETTE``."""
        text = self.segmentations[segmentation].segments["colour"].iloc[row]
        if isinstance(text, str) and text.startswith("#") and len(text) == 7:
            return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
        return OVERLAY_PALETTE[(segmentation * 3 + row) % len(OVERLAY_PALETTE)]

    def set_segment_visible(self, segment: int | str, visible: bool, segmentation: int = 0) -> None:
        """Show or hide a segment (number or label) of the ``segmentation``-th overlay."""
        row = self.segmentations[segmentation].index(segment)
        offset = sum(len(s.segments) for s in self.segmentations[:segmentation])
        self.segment_toggles.children[offset + row].children[1].value = bool(visible)

    def _on_segment_toggle(self, key: tuple[int, int], visible: bool) -> None:
        self.segment_visible[key] = visible
        self._request_render()

    def _overlay(self, image: Any, index: int) -> Any:
        """The rendered frame with the visible segments blended in (``overlay_opacity``)."""
        from PIL import Image

        opacity = float(self.overlay_opacity.value)
        if not self.segmentations or opacity <= 0:
            return image
        ref = self.refs[index] if self._array is None and index < len(self.refs) else None
        layers = []
        for number, seg in enumerate(self.segmentations):
            k = index if ref is None else self._segment_slices[number].get((ref.sop_instance_uid, ref.frame))
            if k is None:
                continue
            for row in range(len(seg.segments)):
                if self.segment_visible.get((number, row)) and seg.masks[row, k].any():
                    layers.append((seg.masks[row, k], self.segment_colour(number, row)))
        if not layers:
            return image
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        for mask, colour in layers:
            scaled = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize(image.size, Image.Resampling.NEAREST))
            alpha = (opacity * np.clip(scaled, 0, 1))[..., None]
            rgb = rgb * (1 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
        return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")
