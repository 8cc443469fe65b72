"""URLs of DICOMweb resources (PS3.18 10.4.1): ``{root}/studies/{s}[/series/{se}[/instances/{i}]]``."""

from __future__ import annotations

from collections.abc import Callable


def resource_url(root: str, study: str, series: str | None = None, instance: str | None = None) -> str:
    """The URL of a study, series or instance under a DICOMweb root (a series needs its study, and so on)."""
    url = f"{root.rstrip('/')}/studies/{study}"
    if series:
        url += f"/series/{series}"
        if instance:
            url += f"/instances/{instance}"
    return url


# Builds the URL of a study, series or instance (``resource_url`` under a root, usually).
UrlBuilder = Callable[[str, "str | None", "str | None"], str]
