"""What makes two requests the same: the one definition of a request's identity.

A request is its endpoint and its input body, with each local file standing for its content
(``sha256:<hex>``) rather than its path, plus the take number for a row's extra takes. From
that one canonical request come both fingerprints batchrunner keeps:

* the **job id** of a row without an ``id`` column: ``j`` + 16 hex of its sha256;
* the ledger's **input hash**, which tells an edited row (same id, other content) apart.

They were written with different JSON settings before this module existed (the id keeps non-ASCII
text as is, the hash escapes it); both encodings are kept so that existing ledgers keep their
ids and hashes (pinned by ``test_job_ids_and_input_hashes_of_existing_ledgers_do_not_change``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from batchrunner.images import place


def canonical(
    endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str], take: int | None = None
) -> dict[str, Any]:
    """The request as identity sees it: local files (by key, see ``images.file_key``) by sha."""
    body = dict(payload)
    for key, sha in shas.items():
        place(body, key, f"sha256:{sha}")
    request: dict[str, Any] = {"endpoint": endpoint, "input": body}
    if take is not None:
        request["take"] = take
    return request


def job_id(
    endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str], take: int | None = None
) -> str:
    text = _dumps(canonical(endpoint, payload, shas, take), ascii_only=False)
    return "j" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def input_hash(endpoint: str, payload: Mapping[str, Any], shas: Mapping[str, str]) -> str:
    return hashlib.sha256(_dumps(canonical(endpoint, payload, shas)).encode()).hexdigest()


def _dumps(value: Any, *, ascii_only: bool = True) -> str:
    return _ENCODERS[ascii_only].encode(value)


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=..., default=str), each
# built once rather than per call (json.dumps makes a new encoder whenever options are given)
_ENCODERS = {
    ascii_only: json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, default=str
    )
    for ascii_only in (True, False)
}
