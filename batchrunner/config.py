"""``batchrunner.toml``: a batch's settings beside its manifest, so the cron line stays short.

Looked for beside the manifest unless ``--config`` names one. Options given on the command line
win over the file; the file wins over built-in defaults. Example::

    model = "fal-ai/veo3/image-to-video"
    provider = "quickrouter"
    concurrency = 4
    budget = 150          # USD
    out = "videos"
    ledger = "shots.db"
    count = 2
    prompt_template = "A {subject} at golden hour, {style}"

    [defaults]            # fill empty cells, like --set
    duration = "8s"
    generate_audio = false

    [matrix]              # like --matrix aspect_ratio=16:9,9:16
    aspect_ratio = ["16:9", "9:16"]
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from batchrunner.errors import UsageError
from batchrunner.expand import MAX_TAKES
from batchrunner.settings import NAMES, checked, options, toml_key
from batchrunner.spelling import did_you_mean

CONFIG_NAME = "batchrunner.toml"

# key in the file -> the option it sets: every setting that has a TOML key (declared once, in
# batchrunner.settings), then the options that shape a manifest's jobs (tables apart)
KEYS: dict[str, str] = {key: name for name in NAMES if (key := toml_key(name))} | {
    name: name for name in ("count", "prompt_template", "dedupe", "strict")
}
TABLES = ("defaults", "matrix")
# the kinds (see batchrunner.settings.Option.kind) of the options that shape a manifest's jobs
SHAPING_KINDS = {
    "count": f"int:1:{MAX_TAKES}",
    "prompt_template": "text",
    "dedupe": "flag",
    "strict": "flag",
}


_A_KEY = re.compile(r"(^|_)(api_?key|key|token|secret)$|^fal_key$", re.IGNORECASE)


def kind_of(name: str) -> str:
    """What option ``name`` (a setting or one of :data:`SHAPING_KINDS`) takes."""
    return SHAPING_KINDS.get(name) or options()[name].kind


def find_config(manifest: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"no config file at {explicit}")
        return explicit
    beside = manifest.expanduser().resolve().parent / CONFIG_NAME
    return beside if beside.is_file() else None


def load_config(path: Path | None) -> dict[str, Any]:
    """The file's settings as option names; relative paths resolved against the file."""
    if path is None:
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from exc
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name in TABLES:
            if not isinstance(value, dict):
                raise UsageError(f"{path}: [{name}] must be a table of field = value")
            settings[name] = value
        elif name in KEYS:
            try:  # a wrong value is the file's mistake, named as it is written there
                checked(key, kind_of(KEYS[name]), value)
            except UsageError as exc:
                raise UsageError(f"{path}: {exc}") from None
            settings[KEYS[name]] = value
        elif _A_KEY.search(name):  # a file beside a sheet is shared, committed, mailed
            raise UsageError(
                f"{path}: {key!r}: the API key is never read from a file: set it in the "
                "environment (QUICKROUTER_API_KEY or BATCHRUNNER_API_KEY; FAL_KEY with "
                'provider = "fal"), and take it out of this file'
            )
        else:
            allowed = ", ".join([*KEYS, *(f"[{t}]" for t in TABLES)])
            hint = did_you_mean(name, [*KEYS, *TABLES])
            raise UsageError(f"{path}: unknown setting {key!r}{hint}; allowed: {allowed}")
    for name in ("out", "ledger"):
        if name in settings:
            settings[name] = path.parent / Path(str(settings[name])).expanduser()
    matrix = settings.get("matrix", {})
    for field, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path}: [matrix] {field} must be a list of values")
    return settings
