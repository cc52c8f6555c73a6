"""Panels that apps above pki add to the certificate and subscriber pages (``syncs``: where a certificate
is deployed), registered from their own ``admin`` module; pki imports none of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.utils.safestring import SafeString

Page = Literal["certificate", "subscriber"]
Panel = Callable[[Any, Any], SafeString | None]  # (request, row) -> HTML, or None to show nothing

_PANELS: dict[str, list[Panel]] = {"certificate": [], "subscriber": []}


def register(page: Page, panel: Panel) -> None:
    if panel not in _PANELS[page]:
        _PANELS[page].append(panel)


def render(page: Page, request: Any, obj: Any) -> list[SafeString]:
    return [html for panel in _PANELS[page] if (html := panel(request, obj))]
