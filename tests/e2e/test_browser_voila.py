"""dw.Browser in a real browser: Voilà renders a notebook with the widget, Debian's Chromium (headless,
driven by Playwright) searches, opens a study, looks at the rendered image's pixels, changes the
window, and retrieves into the workspace store until the progress bar is full.

Waits are on real conditions (the status text, the image loaded, the bar's width) with generous
limits for a slow CI machine; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dicomweb_nb as dw

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SLOW = 90_000  # ms: kernel start-up and first execution on a loaded 2-core machine


def status_contains(page, text: str, timeout: int = SLOW) -> None:
    page.wait_for_function(
        "text => { const s = document.querySelector('.dwnb-status'); return s && s.innerText.includes(text); }",
        arg=text, timeout=timeout)


def element_pixels(locator) -> np.ndarray:
    """What Chromium painted for an element, as RGB pixels."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(float)


def test_search_view_and_retrieve_in_chromium(voila_browser, chromium):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            page.goto(voila_browser.url, timeout=SLOW)
            page.wait_for_selector(".dwnb-browser", timeout=SLOW)
            status_contains(page, "2 studies on")  # the first search runs as the widget opens

            # Search by patient name, as a user types it.
            patient = page.locator(".dwnb-q-patient-name input")
            patient.fill("E2E^Ph*")
            patient.press("Enter")
            page.locator("button.dwnb-search").click()
            status_contains(page, "1 study on")
            rows = page.locator("button.dwnb-row-open:visible")
            assert rows.count() == 1
            assert "E2E^Phantom" in page.locator(".dwnb-table-grid").inner_text()

            # Open the study: its series with a thumbnail, then the viewer.
            rows.first.click()
            page.wait_for_selector("button.dwnb-series-view", timeout=SLOW)
            page.wait_for_function(
                "() => { const i = document.querySelector('img.dwnb-thumbnail');"
                " return i && i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')"
                " && document.querySelector('.dwnb-series-text') !== null; }", timeout=SLOW)
            page.locator("button.dwnb-series-view").first.click()
            page.wait_for_function(
                "() => { const c = document.querySelector('.dwnb-caption-text');"
                " const i = document.querySelector('img.dwnb-image');"
                " return c && c.innerText.includes('frame 6 of 12') && i && i.complete && i.naturalWidth === 256; }",
                timeout=SLOW)
            image = page.locator("img.dwnb-image")
            pixels = element_pixels(image)
            height, width = pixels.shape[:2]
            centre = pixels[height // 2 - 20:height // 2 + 20, width // 2 - 20:width // 2 + 20]
            corner = pixels[4:30, 4:30]
            # The phantom: a water sphere (0 HU, grey ~102 in the image's 40/400 window) in air (black).
            assert 80 < centre.mean() < 130, centre.mean()
            assert corner.mean() < 10, corner.mean()
            assert "PatientName" in page.locator(".dwnb-tags").inner_text()

            # A lung window shows the air as grey.
            page.locator(".dwnb-presets button", has_text="Lung").click()
            page.wait_for_function(
                "() => document.querySelector('.dwnb-caption-text').innerText.includes('Lung W 1500 L -600')",
                timeout=SLOW)
            page.wait_for_function(
                "() => { const i = document.querySelector('img.dwnb-image'); return i.complete && i.naturalWidth === 256; }",
                timeout=SLOW)
            lung = element_pixels(image)
            assert lung[4:30, 4:30].mean() > 40, lung[4:30, 4:30].mean()

            # Retrieve the opened study into the workspace store: the bar must reach the end.
            page.locator("button.dwnb-retrieve").click()
            page.wait_for_function(
                "() => { const b = document.querySelector('.dwnb-retrieve-progress .progress-bar');"
                " return b && b.style.width === '100%' && b.classList.contains('progress-bar-success'); }",
                timeout=SLOW)
            assert page.locator(".dwnb-retrieve-count").inner_text().strip() == "12 / 12"
            status_contains(page, "12 retrieved")
            page.screenshot(path=str(ARTIFACTS / "browser-voila.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-voila-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    phantom = voila_browser.studies[0]
    local = dw.connect(store=voila_browser.store, progress=False)
    assert len(local.instances(str(phantom[0].StudyInstanceUID))) == 12
