"""Cloud Run as Enqueuer sees it: the services of a region, and which one serves a worker's URL.

A worker is known by its URL only; the service behind it is the one whose ``uri`` or
``urls`` (the hash-based and the deterministic ``run.app`` addresses) have the URL's scheme
and host.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from google.cloud import run_v2

from enqueuer_core.config import base_url


def normalized(url: str) -> str:
    """Scheme and host, lower-cased: how two URLs are compared for the same service."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def list_services(client: Any, location: str, timeout: float) -> list[run_v2.Service]:
    """Every service in ``projects/P/locations/L``, all pages."""
    out: list[run_v2.Service] = []
    token = ""
    while True:
        page = client.list_services(
            request=run_v2.ListServicesRequest(parent=location, page_size=500,
                                               page_token=token),
            retry=None, timeout=timeout)
        out.extend(page.services)
        token = page.next_page_token
        if not token:
            return out


def service_for(services: Iterable[run_v2.Service], url: str) -> run_v2.Service | None:
    """The service whose address is the URL's scheme and host, if one is."""
    want = normalized(base_url(url))
    for svc in services:
        if want in {normalized(base_url(u)) for u in [svc.uri, *svc.urls] if u}:
            return svc
    return None


def short_name(name: str) -> str:
    """``projects/P/locations/L/services/brain`` -> ``brain``."""
    return name.rsplit("/", 1)[-1]
