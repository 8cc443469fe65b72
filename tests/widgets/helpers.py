"""Helpers for the widget tests: decode what an Image widget shows, expected windowed pixels, widget walks."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import ipywidgets as widgets
import numpy as np
from PIL import Image

from dicomweb_nb.pixels.voi import Window, apply_window


def png_pixels(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes, as Pillow decodes them."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG", image.format
    image.load()
    return np.asarray(image)


def windowed(modality_values: np.ndarray, window: Window) -> np.ndarray:
    """8-bit display values of a window, rounded half up, computed from the PS3.3 formulas."""
    y = apply_window(np.asarray(modality_values, dtype=np.float64), window)
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def walk(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    """The widget and every widget under it (children, titles of tabs...)."""
    seen: set[int] = set()
    stack = [widget]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for child in getattr(current, "children", ()) or ():
            if isinstance(child, widgets.Widget):
                stack.append(child)


def widget_state_text(widget: widgets.Widget) -> str:
    """Everything the widgets under ``widget`` would send to the page, as one JSON text."""
    states = []
    for w in walk(widget):
        state = w.get_state()
        states.append({k: v for k, v in state.items() if not isinstance(v, (bytes, memoryview))})
    return json.dumps(states, default=str)
