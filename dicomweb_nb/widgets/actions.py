"""Retrieve and upload panels: progress bars fed by the client's own transfers, with cancel.

Both call the client (``Client.retrieve``, ``Client.store``) with a ``progress_bar`` factory that
drives an ``IntProgress`` instead of tqdm, and a ``cancel`` event the Cancel button sets; the
client stops before the next instance (retrieve) or batch (upload), so what is done stays done and
running again resumes.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ._tasks import UI_LOCK, StatusBar, TaskRunner

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = ["ProgressPanel", "RetrievePanel", "UploadPanel", "WidgetProgressBar"]


class WidgetProgressBar:
    """A tqdm look-alike (``update``, ``close``) moving an IntProgress; several bars may feed one widget."""

    def __init__(self, panel: ProgressPanel, total: int | None = None, **_: Any):
        self.panel = panel
        self.total = int(total or 0)
        panel._add_total(self.total)

    def update(self, n: int = 1) -> None:
        self.panel._advance(int(n))

    def close(self) -> None:
        pass


class ProgressPanel(widgets.VBox):
    """A progress bar, its caption and a Cancel button for one kind of transfer."""

    def __init__(self, verb: str, status: StatusBar, runner: TaskRunner):
        self.verb = verb
        self.status = status
        self.runner = runner
        self.cancel_event = threading.Event()
        self.running = False
        self._fresh = True  # no bar has reported its total yet
        self.last_result: pd.DataFrame | None = None
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description=verb.capitalize(),
                                            layout=widgets.Layout(width="360px"))
        self.progress.add_class(f"dwnb-{verb}-progress")
        self.caption = widgets.HTML()
        self.caption.add_class(f"dwnb-{verb}-caption")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True,
                                            tooltip=f"stop the {verb} after the instances in flight")
        self.cancel_button.add_class(f"dwnb-{verb}-cancel")
        self.cancel_button.on_click(lambda _b: self.cancel())
        self._lock = threading.Lock()
        super().__init__()

    def bar_factory(self, **kwargs: Any) -> WidgetProgressBar:
        return WidgetProgressBar(self, **kwargs)

    def _add_total(self, total: int) -> None:
        with self._lock, UI_LOCK:
            if self._fresh:
                self._fresh = False
                self.progress.max = max(total, 1)
                self.progress.value = 0
            else:
                self.progress.max = self.progress.max + total
            self._update_caption()

    def _advance(self, n: int) -> None:
        with self._lock, UI_LOCK:
            self.progress.value = min(self.progress.value + n, self.progress.max)
            self._update_caption()

    def _update_caption(self) -> None:
        self.caption.value = (f'<span class="dwnb-{self.verb}-count">{self.progress.value} / '
                              f"{self.progress.max if not self._fresh else '?'}</span> instances")

    def cancel(self) -> None:
        """Stop the running transfer after the instances already in flight."""
        if self.running:
            self.cancel_event.set()
            self.status.show(f"cancelling the {self.verb}…", "busy")

    def start(self, work: Callable[[], pd.DataFrame], describe: Callable[[pd.DataFrame], str]) -> Any:
        """Run ``work`` in the background with the bar reset; refuse while one is running."""
        if self.running:
            raise RuntimeError(f"a {self.verb} is already running: cancel it or wait")
        self.cancel_event.clear()
        self.running = True
        self._fresh = True
        with UI_LOCK:
            self.progress.value = 0
            self.progress.max = 1
            self.progress.bar_style = "info"
            self.caption.value = "starting&hellip;"
            self.cancel_button.disabled = False

        def run() -> pd.DataFrame:
            try:
                result = work()
            except BaseException:
                with UI_LOCK:
                    self.progress.bar_style = "danger"
                    self.caption.value = f"the {self.verb} failed"
                raise
            finally:
                self.running = False
                self.cancel_button.disabled = True
            self.last_result = result
            counts = result["status"].value_counts().to_dict() if len(result) else {}
            with UI_LOCK:
                if self._fresh:  # nothing to transfer at all
                    self._fresh = False
                    self.progress.max = 1
                if not self.cancel_event.is_set():
                    self.progress.value = self.progress.max
                failed = counts.get("failed", 0)
                self.progress.bar_style = ("warning" if self.cancel_event.is_set() else
                                           "danger" if failed else "success")
                parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                self.caption.value = (f'<span class="dwnb-{self.verb}-count">{self.progress.value} / '
                                      f"{self.progress.max}</span> instances &middot; {html.escape(parts or 'nothing to do')}")
            text = describe(result)
            kind = "error" if counts.get("failed") else ("info" if self.cancel_event.is_set() else "ok")
            self.status.show(text, kind)
            return result

        return self.runner.submit(run)


def _summary(result: pd.DataFrame, verb: str, where: str) -> str:
    counts = result["status"].value_counts().to_dict() if len(result) else {}
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to do"
    text = f"{verb} to {where}: {parts}"
    errors = result["error"].dropna() if "error" in result else pd.Series(dtype=object)
    if counts.get("failed") and len(errors):
        text += f". First error: {errors.iloc[0]}"
    return text


class RetrievePanel(ProgressPanel):
    """Copy the selected studies or series into the workspace store or a folder."""

    def __init__(self, status: StatusBar, runner: TaskRunner, *, folder: str = "dicom-downloads"):
        super().__init__("retrieve", status, runner)
        self.destination = widgets.ToggleButtons(options=["Workspace store", "Folder"], value="Workspace store",
                                                 description="Into")
        self.destination.add_class("dwnb-retrieve-destination")
        self.folder = widgets.Text(value=folder, description="Folder", placeholder="a folder on the kernel's machine",
                                   layout=widgets.Layout(width="360px"))
        self.folder.add_class("dwnb-retrieve-folder")
        self.button = widgets.Button(description="Retrieve", icon="download", button_style="primary",
                                     tooltip="copy the checked series, or else the checked studies")
        self.button.add_class("dwnb-retrieve")
        self.children = [widgets.HTML("Copies the checked series (or, with none checked, the checked studies or "
                                      "the opened one) from the server."),
                         self.destination, self.folder,
                         widgets.HBox([self.button, self.cancel_button]), widgets.HBox([self.progress, self.caption])]
        self.add_class("dwnb-retrieve-panel")

    def run(self, client: Client, targets: Sequence[tuple[str, str | None]], *, to: str | Path | Client | None = None,
            workspace: Callable[[], Client] | None = None) -> Any:
        """Retrieve each ``(study, series or None)``; ``to`` overrides the destination chosen in the panel."""
        if not targets:
            raise ValueError("nothing to retrieve: check studies or series first")
        if to is None:
            if self.destination.value == "Folder":
                text = self.folder.value.strip()
                if not text:
                    raise ValueError("give a folder to retrieve into")
                to = Path(text).expanduser()
            else:
                if workspace is None:
                    raise ValueError("no workspace store to retrieve into")
                to = workspace()
        destination = to
        where = str(destination) if isinstance(destination, (str, Path)) else "the workspace store"
        if not isinstance(destination, (str, Path)) and _same_store(client, destination):
            raise ValueError("these studies are already in the workspace store: pick another server, or a folder")
        targets = list(targets)
        self.status.show(f"retrieving {len(targets)} {'series' if targets[0][1] else 'studies'} to {where}…", "busy")

        def work() -> pd.DataFrame:
            frames = []
            for study, series in targets:
                if self.cancel_event.is_set():
                    break
                frames.append(client.retrieve(study, series, to=destination, progress=False,
                                              progress_bar=self.bar_factory, cancel=self.cancel_event))
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["status", "error"])

        return self.start(work, lambda result: _summary(result, "retrieve", where))


def _same_store(a: Client, b: Client) -> bool:
    store_a = getattr(getattr(a.source, "store", None), "root", None)
    store_b = getattr(getattr(b.source, "store", None), "root", None)
    return store_a is not None and store_b is not None and Path(store_a).resolve() == Path(store_b).resolve()


class UploadPanel(ProgressPanel):
    """STOW-RS of files or folders on the kernel's machine, or of files picked in the browser."""

    def __init__(self, status: StatusBar, runner: TaskRunner):
        super().__init__("upload", status, runner)
        self.path = widgets.Text(description="Path", placeholder="a DICOM file or folder on the kernel's machine",
                                 layout=widgets.Layout(width="420px"))
        self.path.add_class("dwnb-upload-path")
        self.files = widgets.FileUpload(accept="", multiple=True, description="Pick files")
        self.files.add_class("dwnb-upload-files")
        self.button = widgets.Button(description="Upload", icon="upload", button_style="primary",
                                     tooltip="STOW-RS to the selected server")
        self.button.add_class("dwnb-upload")
        self.children = [widgets.HTML("Stores DICOM files on the selected server (STOW-RS); folders are read "
                                      "recursively, files that are not DICOM are listed as skipped."),
                         widgets.HBox([self.path, self.files]),
                         widgets.HBox([self.button, self.cancel_button]), widgets.HBox([self.progress, self.caption])]
        self.add_class("dwnb-upload-panel")

    def picked_files(self) -> list[bytes]:
        """The contents of the files picked with the browser's file dialog."""
        return [bytes(item["content"]) for item in self.files.value]

    def run(self, client: Client, paths: Sequence[str | Path | bytes] | None = None, *, where: str = "the server",
            batch_size: int = 10) -> Any:
        """Upload ``paths`` (else the Path field and the picked files) in batches of ``batch_size``."""
        if paths is None:
            chosen: list[Any] = []
            text = self.path.value.strip()
            if text:
                path = Path(text).expanduser()
                if not path.exists():
                    raise FileNotFoundError(f"no such file or folder: {path}")
                chosen.append(path)
            chosen += self.picked_files()
        else:
            chosen = list(paths)
        if not chosen:
            raise ValueError("nothing to upload: give a path or pick files")
        self.status.show(f"uploading to {where}…", "busy")

        def work() -> pd.DataFrame:
            return client.store(chosen, progress=False, progress_bar=self.bar_factory, cancel=self.cancel_event,
                                batch_size=batch_size)

        def describe(result: pd.DataFrame) -> str:
            return _summary(result, "upload", where)

        return self.start(work, describe)
