"""The delete panel of the browser: the checked series (else the checked or opened studies) leave the
server, after a confirmation that says what and where.

``Delete…`` only asks: it shows the question with ``Yes, delete`` and ``No, keep them``; nothing is
deleted until the first is clicked (or ``confirm()`` called). The deletion runs in the background
through ``Client.delete`` (``confirm=True`` for whole studies: the question was the confirmation),
one resource after the other; each failure is listed, the others still go.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ._tasks import UI_LOCK, StatusBar, TaskRunner, describe_error

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..client.client import Client

__all__ = ["DeletePanel"]

Target = tuple[str, "str | None"]  # (study, series or None for the whole study)


def describe_targets(targets: Sequence[Target]) -> str:
    series = [t for t in targets if t[1]]
    studies = [t for t in targets if not t[1]]
    parts = []
    if studies:
        parts.append(f"{len(studies)} {'study' if len(studies) == 1 else 'studies'}")
    if series:
        parts.append(f"{len(series)} series")
    return " and ".join(parts)


class DeletePanel(widgets.VBox):
    """Asks before deleting, then deletes in the background and reports what happened."""

    def __init__(self, status: StatusBar, runner: TaskRunner):
        self.status = status
        self.runner = runner
        self.pending: tuple[Client, list[Target], str, Callable[[list[Target]], None] | None] | None = None
        self.last_result: list[tuple[str, str | None, str | None]] = []  # (study, series, error or None)
        self.button = widgets.Button(description="Delete…", icon="trash", button_style="danger",
                                     tooltip="delete the checked series, or else the checked studies (asks first)")
        self.button.add_class("dwnb-delete")
        self.question = widgets.HTML()
        self.question.add_class("dwnb-delete-question")
        self.confirm_button = widgets.Button(description="Yes, delete", icon="check", button_style="danger")
        self.confirm_button.add_class("dwnb-delete-confirm")
        self.confirm_button.on_click(lambda _b: self.confirm())
        self.keep_button = widgets.Button(description="No, keep them", icon="times")
        self.keep_button.add_class("dwnb-delete-keep")
        self.keep_button.on_click(lambda _b: self.dismiss())
        self.confirmation = widgets.VBox([self.question, widgets.HBox([self.confirm_button, self.keep_button])],
                                         layout=widgets.Layout(display="none"))
        self.confirmation.add_class("dwnb-delete-confirmation")
        super().__init__([widgets.HTML("Deletes the checked series (or, with none checked, the checked studies or the "
                                       "opened one) from the server. It cannot be undone: you are asked first."),
                          self.button, self.confirmation])
        self.add_class("dwnb-delete-panel")

    @property
    def asking(self) -> bool:
        """Whether the question is on screen, waiting for an answer."""
        return self.pending is not None

    def ask(self, client: Client, targets: Sequence[Target], *, where: str,
            on_done: Callable[[list[Target]], None] | None = None) -> None:
        """Show the question for ``targets`` on ``where``; ``on_done(deleted)`` runs after a deletion."""
        if not targets:
            raise ValueError("nothing to delete: check studies or series first")
        targets = list(targets)
        self.pending = (client, targets, where, on_done)
        with UI_LOCK:
            self.question.value = (f"<b>Delete {html.escape(describe_targets(targets))} from {html.escape(where)}?</b> "
                                   "Their instances are removed from the server for everyone; this cannot be undone.")
            self.confirmation.layout.display = "flex"
        self.status.show(f"confirm the deletion of {describe_targets(targets)} (Delete panel)", "info")

    def dismiss(self) -> None:
        """Answer no: nothing is deleted."""
        if self.pending is None:
            return
        self.pending = None
        with UI_LOCK:
            self.confirmation.layout.display = "none"
        self.status.show("nothing was deleted", "info")

    def confirm(self) -> Future:
        """Answer yes: delete what the question named (in the background)."""
        if self.pending is None:
            raise RuntimeError("there is no deletion to confirm: choose what to delete and click Delete… first")
        client, targets, where, on_done = self.pending
        self.pending = None
        with UI_LOCK:
            self.confirmation.layout.display = "none"
        return self.run(client, targets, where=where, on_done=on_done)

    def run(self, client: Client, targets: Sequence[Target], *, where: str,
            on_done: Callable[[list[Target]], None] | None = None) -> Future:
        """Delete ``targets`` now, without asking (the caller asked)."""
        targets = list(targets)
        self.status.show(f"deleting {describe_targets(targets)} from {where}…", "busy")
        self.button.disabled = True

        def work() -> list[tuple[str, str | None, str | None]]:
            results: list[tuple[str, str | None, str | None]] = []
            try:
                for study, series in targets:
                    try:
                        client.delete(study, series, confirm=True)
                        results.append((study, series, None))
                    except Exception as exc:  # noqa: BLE001 - each failure is reported, the others still go
                        results.append((study, series, describe_error(exc, server=where)))
            finally:
                self.button.disabled = False
            self.last_result = results
            deleted = [(study, series) for study, series, error in results if error is None]
            failed = [error for _s, _se, error in results if error is not None]
            text = f"deleted {describe_targets(deleted) or 'nothing'} from {where}"
            if failed:
                self.status.show(f"{text}; {len(failed)} failed. First error: {failed[0]}", "error")
            else:
                self.status.show(text, "ok")
            if on_done is not None and deleted:
                on_done(deleted)
            return results

        return self.runner.submit(work)
