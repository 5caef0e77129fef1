"""The manifest's file URLs, fetched before anything is bought (``--check-urls``).

A row whose ``image_url`` the provider cannot fetch is a job that fails after it waited its
turn in the queue: an expired or private link (403), a moved file (404), a share link that
serves a sign-in or preview web page instead of the file. Each distinct http(s) URL of a file
field is asked for its first kilobyte (``Range: bytes=0-1023``, redirects followed, no
credentials: the client of :mod:`batchrunner.downloader`), a few at a time; what would fail is
a problem of its row and column, like any other, before anything is sent.

Only what the provider would certainly refuse is a problem: an HTTP error, a web page, no
answer at all. A file served as ``application/octet-stream`` or an image type the checks here do
not know is left to the provider. The check runs from this machine: a URL only the provider's
servers may reach (an allow-listed bucket) is not checkable, hence opt-in.
"""

from __future__ import annotations

import contextlib

import anyio
import httpx

from batchrunner.downloader import MediaClient
from batchrunner.errors import DownloadError, Problem
from batchrunner.images import kind_of_field, sniff_mime
from batchrunner.manifest import Manifest

CHECKS_AT_ONCE = 16
CHECK_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
_WEB_PAGES = ("text/html", "application/xhtml+xml")


def url_problems(manifest: Manifest, client: MediaClient | None = None) -> list[Problem]:
    """A problem for each row and file field whose http(s) URL cannot be fetched as a file;
    each URL is fetched once however many rows share it."""
    where: dict[str, list[tuple[int, int | None, str]]] = {}  # url → (row, line, column)
    for row in manifest.rows:
        for name in manifest.spec_of(row).file_fields:
            value = row.payload.get(name)
            for url in value if isinstance(value, list) else [value]:
                if isinstance(url, str) and url.startswith(("http://", "https://")):
                    places = where.setdefault(url, [])
                    if (row.row, row.line, name) not in places:  # a row's variants: said once
                        places.append((row.row, row.line, name))
    if not where:
        return []
    from batchrunner.runtime import beside_a_loop

    found = beside_a_loop(lambda: anyio.run(_check_all, list(where), client))
    return [
        Problem(f"{kind_of_field(column)} URL {why}", row=row, line=line, column=column, value=url)
        for url, why in found.items()
        for row, line, column in where[url]
    ]


async def _check_all(urls: list[str], client: MediaClient | None) -> dict[str, str]:
    found: dict[str, str] = {}
    limit = anyio.CapacityLimiter(CHECKS_AT_ONCE)

    async def check(url: str, media: MediaClient) -> None:
        async with limit:
            why = await problem_of(url, media)
        if why is not None:
            found[url] = why

    owned = MediaClient(timeout=CHECK_TIMEOUT) if client is None else contextlib.nullcontext(client)
    async with owned as media, anyio.create_task_group() as checks:
        for url in urls:
            checks.start_soon(check, url, media)
    return {url: found[url] for url in urls if url in found}  # in the manifest's order


async def problem_of(url: str, client: MediaClient) -> str | None:
    """Why the provider could not fetch ``url`` as a file, or None."""
    try:
        async with client.get(url, {"Range": "bytes=0-1023"}) as response:
            status = response.status_code
            if status >= 400:
                hint = " (a private or expired link?)" if status in (401, 403) else ""
                return f"answered {status}{hint}: the provider could not fetch it either"
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            head = b""
            async for chunk in response.aiter_bytes():
                head += chunk
                if len(head) >= 16:
                    break
            if kind in _WEB_PAGES and sniff_mime(head) is None:
                return (
                    "serves a web page, not the file (a share or preview link? give the "
                    "file's direct download link)"
                )
    except DownloadError as exc:  # too many redirects, or to a URL that is not http(s)
        return f"cannot be fetched: {exc}"
    except httpx.TransportError as exc:
        return f"cannot be fetched from this machine ({type(exc).__name__}: {exc or 'no answer'})"
    return None
