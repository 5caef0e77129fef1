"""The model registry: every endpoint batchrunner can validate and price, as data files.

Each endpoint is one JSON file: the JSON Schema of its input as fal publishes it, the price rule
(:mod:`batchrunner.pricing`), and the output field that holds the file::

    {"endpoint_id": "fal-ai/veo3.1/image-to-video",
     "title": "...", "source": "...", "notes": ["..."],
     "input": {"type": "object", "properties": {...}, "required": [...]},
     "output": {"field": "video", "audio": "generate_audio"},
     "price": {"per": "second", "rates": [...], "confirmed": true}}

Shipped files live in ``batchrunner/catalog/``; the user's own (``batchrunner models add``) in
:func:`user_dir` (``$BATCHRUNNER_MODELS_DIR``, else ``~/.config/batchrunner/models``) and take
precedence. Nothing here has code per model: validation, coercion, defaults, enums, limits,
hints and prices all follow from the file.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from batchrunner import schema
from batchrunner.coerce import OMIT, BadCell, FieldKind, coerce
from batchrunner.errors import UsageError
from batchrunner.pricing import PriceRule, PriceRuleError, flat, seconds_of
from batchrunner.spelling import did_you_mean, near_models

MAX_IMAGE_BYTES = 8 * 1024 * 1024  # fal's limit for an input file unless the schema says more
DEFAULT_MODEL = "fal-ai/veo3/image-to-video"
MODELS_DIR_ENV = "BATCHRUNNER_MODELS_DIR"
FALLBACK_SECONDS = 5.0  # a clip's length when the model has no duration field
# how fal's field texts state a file limit: "Max file size: 25.0MB", "File size: Up to 15 MB"
_FILE_SIZE = re.compile(r"file size:\s*(?:up to\s*)?([0-9]+(?:\.[0-9]+)?)\s*MB\b", re.IGNORECASE)


class UnknownModelError(UsageError):
    """An endpoint id that is not in the registry (exit 2, with "did you mean")."""


class ModelFileError(UsageError):
    """A registry file that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True)
class ModelSpec:
    endpoint_id: str
    input_schema: Mapping[str, Any] | None  # None: not registered, the input passes through
    price: PriceRule | None = None
    output_field: str = "video"  # result[output_field] = {"url", "file_size", ...}
    audio: str | bool = False  # the field that switches audio on, or whether there always is
    title: str = ""
    source: str = ""
    notes: tuple[str, ...] = ()
    origin: str = "shipped"  # "shipped", the user file's path, or "unregistered"
    default_extension: str = ".mp4"

    @functools.cached_property
    def kinds(self) -> dict[str, FieldKind]:
        """Each input field with the kind of cell it takes (none for an unregistered model)."""
        return schema.field_kinds(self.input_schema) if self.input_schema is not None else {}

    @property
    def known(self) -> bool:
        return self.input_schema is not None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.kinds)

    @functools.cached_property
    def file_fields(self) -> tuple[str, ...]:
        return schema.file_fields(self.input_schema) if self.input_schema else ()

    @functools.cached_property
    def checker(self) -> schema.Checker | None:
        return schema.Checker(self.input_schema) if self.input_schema is not None else None

    @functools.cached_property
    def price_fields(self) -> tuple[str, ...]:
        """The fields a plan breaks the estimate down by, in the model's field order."""
        names = self.price.fields if self.price else ()
        order = {name: i for i, name in enumerate(self.fields)}
        return tuple(sorted(names, key=lambda name: order.get(name, len(order))))

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The request body: ``values`` with the schema's defaults filled in."""
        return self.checker.complete(values) if self.checker else dict(values)

    def problems(self, body: Mapping[str, Any]) -> list[schema.InputProblem]:
        return self.checker.problems(body) if self.checker else []

    def value_problem(self, name: str, value: Any) -> str | None:
        """What is wrong with ``value`` as the cell of field ``name`` (read as a cell is, then
        checked against the field's schema where the schema is checked field by field), or
        None: how ``--set`` and ``--matrix`` values are checked once, before any row."""
        kind = self.kinds.get(name)
        if kind is None:
            return None
        try:
            value = coerce(value, kind)
        except BadCell as exc:
            return str(exc)
        checker = self.checker
        if value is OMIT or checker is None or not checker.by_field:
            return None
        found = checker.problems({**checker.complete({}), name: value})
        return next((p.message for p in found if p.field == name), None)

    def cost(self, payload: Mapping[str, Any]) -> float | None:
        if self.price is None:
            return None
        try:
            return self.price.cost(payload)
        except ValueError:
            return None

    def costs(self, columns: Mapping[str, Sequence[Any]], rows: int) -> list[float | None]:
        """:meth:`cost` of each of ``rows`` bodies, given the values of their price fields
        (``columns``: field → one value per body; a field it leaves out is absent from
        every body). Each distinct combination is priced once."""
        if self.price is None:
            return [None] * rows
        fields = self.price.fields
        if not fields:
            return [self.cost({})] * rows
        given = [columns.get(name) or [None] * rows for name in fields]
        # with the values' types, as the rule's own memo: True and 1 may cost differently
        keys = list(zip(*given, *(map(type, column) for column in given), strict=True))
        try:
            priced = dict.fromkeys(keys)
        except TypeError:  # an unhashable value (a list): each body priced on its own
            return [self.cost(dict(zip(fields, key, strict=False))) for key in keys]
        for key in priced:
            priced[key] = self.cost(dict(zip(fields, key, strict=False)))
        return [priced[key] for key in keys]

    def max_file_bytes(self, name: str) -> int:
        """The largest file field ``name`` takes: the schema's ``x-fal.max_file_size``, else
        the size its text gives (Wan 2.5's ``audio_url``: "File size: Up to 15 MB"), else
        :data:`MAX_IMAGE_BYTES`."""
        props = self.checker.props if self.checker else {}
        prop = props.get(name, {})
        limit = (prop.get("x-fal") or {}).get("max_file_size")
        if isinstance(limit, int) and limit > 0:
            return int(limit)
        text = f"{prop.get('limit_description') or ''} {prop.get('description') or ''}"
        said = _FILE_SIZE.search(text)
        return int(float(said.group(1)) * 2**20) if said else MAX_IMAGE_BYTES

    def media_shape(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """What the finished clip should be: aspect ratio, seconds, audio, resolution."""
        body = self.complete(payload)
        duration = self.price.seconds if self.price and self.price.per != "video" else "duration"
        seconds = seconds_of(body.get(duration))
        aspect = body.get("aspect_ratio")
        audio = bool(body.get(self.audio)) if isinstance(self.audio, str) else self.audio
        resolution = body.get("resolution")
        return {
            "aspect_ratio": aspect if isinstance(aspect, str) else "16:9",
            "seconds": seconds if seconds else FALLBACK_SECONDS,
            "audio": audio,
            "resolution": resolution if isinstance(resolution, str) else None,
        }

    # ---------------------------------------------------------------- files

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "endpoint_id": self.endpoint_id,
            "title": self.title,
            "source": self.source,
        }
        if self.notes:
            data["notes"] = list(self.notes)
        data["input"] = self.input_schema
        data["output"] = {"field": self.output_field, "audio": self.audio}
        if self.price is not None:
            data["price"] = self.price.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any, origin: str) -> ModelSpec:
        """A spec from a registry file's content; raises ModelFileError naming ``origin``."""
        if not isinstance(data, dict):
            raise ModelFileError(f"{origin}: a model file is a JSON object")
        endpoint = data.get("endpoint_id")
        if not isinstance(endpoint, str) or "/" not in endpoint.strip("/"):
            raise ModelFileError(f"{origin}: 'endpoint_id' must be like 'owner/app[/path]'")
        input_schema = data.get("input")
        if not isinstance(input_schema, dict) or not isinstance(
            input_schema.get("properties"), dict
        ):
            raise ModelFileError(f"{origin}: 'input' must be a JSON Schema object with properties")
        output = data.get("output") or {}
        props = input_schema["properties"]
        audio = output.get("audio", "generate_audio" if "generate_audio" in props else False)
        if isinstance(audio, str) and audio not in props:
            raise ModelFileError(f"{origin}: output.audio names {audio!r}, not an input field")
        try:
            price = (
                PriceRule.from_json(data["price"], f"{origin}: price") if "price" in data else None
            )
        except PriceRuleError as exc:
            raise ModelFileError(str(exc)) from None
        if price is not None:
            missing = [n for n in price.fields if n not in props]
            if missing:
                raise ModelFileError(
                    f"{origin}: the price uses {', '.join(map(repr, missing))}, which the input "
                    f"has no field for; fields: {', '.join(props)}"
                )
            dead = price.unmatchable(_choices(props, price.fields))
            if dead is not None:
                name, value, allowed = dead
                raise ModelFileError(
                    f"{origin}: the price's condition {name}={value} can never be met: "
                    f"{name} is one of {', '.join(allowed)}{did_you_mean(value, allowed)}"
                )
            unsized = price.unsized(_choices(props, [price.frame_field or ""]))
            if unsized is not None:
                name, value, sizes = unsized
                raise ModelFileError(
                    f"{origin}: the price has no frame size for {name}={value}, which the input "
                    f"allows (sizes given: {', '.join(sizes)}): its jobs would have no price"
                )
        return cls(
            endpoint_id=endpoint.strip("/"),
            input_schema=input_schema,
            price=price,
            output_field=str(output.get("field") or "video"),
            audio=audio if isinstance(audio, str | bool) else False,
            title=str(data.get("title") or ""),
            source=str(data.get("source") or ""),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            origin=origin,
        )

    @classmethod
    def unregistered(cls, endpoint_id: str, price_per_job: float | None = None) -> ModelSpec:
        price = None if price_per_job is None else flat(price_per_job, "--price-per-job")
        return cls(endpoint_id=endpoint_id, input_schema=None, price=price, origin="unregistered")


def _choices(props: Mapping[str, Any], names: Iterable[str]) -> dict[str, list[Any]]:
    """The values each of ``names`` may take, where its schema lists them (an ``enum``, or a
    boolean's two)."""
    choices: dict[str, list[Any]] = {}
    for name in names:
        prop = props.get(name)
        if not isinstance(prop, dict):
            continue
        if isinstance(prop.get("enum"), list):
            choices[name] = prop["enum"]
        elif prop.get("type") == "boolean":
            choices[name] = [True, False]
    return choices


# ------------------------------------------------------------------------ the registry


def user_dir() -> Path:
    """Where ``models add`` writes: ``$BATCHRUNNER_MODELS_DIR``, else the user config folder."""
    explicit = os.environ.get(MODELS_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "batchrunner" / "models"


def file_name(endpoint_id: str) -> str:
    return endpoint_id.strip("/").replace("/", "__") + ".json"


@functools.cache
def _shipped() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for entry in resources.files("batchrunner").joinpath("catalog").iterdir():
        if entry.name.endswith(".json"):
            spec = ModelSpec.from_json(json.loads(entry.read_text("utf-8")), "shipped")
            specs[spec.endpoint_id] = spec
    return specs


def _user(folder: Path) -> dict[str, ModelSpec]:
    try:
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json")))
    except OSError:
        return {}
    return _read_user(folder, stamp)


@functools.lru_cache(maxsize=8)
def _read_user(folder: Path, stamp: tuple[tuple[str, int], ...]) -> dict[str, ModelSpec]:
    """The user's files, read again only when one is added, removed or changed."""
    specs: dict[str, ModelSpec] = {}
    for path in (folder / name for name, _ in stamp):
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: cannot read this model file: {exc}") from None
        spec = ModelSpec.from_json(data, str(path))
        specs[spec.endpoint_id] = spec
    return specs


def registry() -> dict[str, ModelSpec]:
    """Every registered endpoint: the shipped catalogue, overridden by the user's files."""
    return {**_shipped(), **_user(user_dir())}


def lookup(endpoint_id: str) -> ModelSpec | None:
    return registry().get(endpoint_id.strip("/"))


def prices_now(
    requests: Iterable[tuple[str, Mapping[str, Any], float | None]],
) -> list[float | None]:
    """What the registry prices each ``(endpoint id, body, recorded price)`` at as its rule is
    now (``models price`` may have changed it since the job was recorded); the recorded
    price for a model outside the registry, which is the ``--price-per-job`` it was recorded
    with. Each model is looked up once (a lookup reads the user's folder: ~35 µs)."""
    specs: dict[str, ModelSpec | None] = {}
    prices: list[float | None] = []
    for endpoint_id, body, recorded in requests:
        if endpoint_id not in specs:
            specs[endpoint_id] = lookup(endpoint_id)
        spec = specs[endpoint_id]
        prices.append(spec.cost(body) if spec is not None and spec.known else recorded)
    return prices


def get_model(
    endpoint_id: str, *, allow_unregistered: bool = False, price_per_job: float | None = None
) -> ModelSpec:
    """The registered spec; an unknown id is an error unless ``allow_unregistered``."""
    spec = lookup(endpoint_id)
    if spec is not None:
        return spec
    if allow_unregistered:
        same = [
            known for known in registry() if known.casefold() == endpoint_id.strip("/").casefold()
        ]
        if same:  # fal's ids are lower-case: another spelling of a registered one is a slip
            raise UnknownModelError(
                f"{endpoint_id!r} is the registered {same[0]!r} in other letters; endpoint ids "
                f"are case-sensitive: write {same[0]!r} (validated and priced)"
            )
        if not _ENDPOINT_ID.fullmatch(endpoint_id.strip("/")):
            raise UnknownModelError(
                f"{endpoint_id!r} is not an endpoint id: write owner/app or owner/app/path, "
                "in letters, digits, '.', '-' and '_' (as in fal-ai/veo3.1/image-to-video)"
            )
        return ModelSpec.unregistered(endpoint_id.strip("/"), price_per_job)
    raise UnknownModelError(unknown_model_message(endpoint_id))


# owner/app[/path...]: what goes into the request URL's path, never a query, a host or a ".."
_ENDPOINT_ID = re.compile(r"(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)+")


def unknown_model_message(endpoint_id: str) -> str:
    known = list(registry())
    close = near_models(endpoint_id, known)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown model {endpoint_id!r}{hint} (`batchrunner models list` shows the "
        f"{len(known)} known; `batchrunner models add` imports one; --allow-unregistered "
        "sends it unvalidated)"
    )


def save_user_model(spec: ModelSpec, *, replace: bool = False) -> Path:
    """Write ``spec`` into :func:`user_dir`; refuses to overwrite unless ``replace``."""
    folder = user_dir()
    path = folder / file_name(spec.endpoint_id)
    if path.exists() and not replace:
        raise UsageError(f"{path} exists; pass --replace to overwrite it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(spec.to_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc} (set {MODELS_DIR_ENV} to another folder)"
        ) from None
    return path


def split_endpoint(endpoint_id: str) -> tuple[str, str, str]:
    """``fal-ai/veo3/image-to-video`` → ``("fal-ai", "veo3", "image-to-video")``.

    Status, result and cancel URLs drop the sub-path: ``{owner}/{app}/requests/{id}``.
    """
    parts = endpoint_id.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"not an endpoint id (owner/app[/path]): {endpoint_id!r}")
    return parts[0], parts[1], "/".join(parts[2:])


# ------------------------------------------------------------------------ models add / price


def add_model(document: str | Path, price: str, *, replace: bool = False) -> tuple[ModelSpec, Path]:
    """Import fal's OpenAPI document for one endpoint, priced by ``price`` (a rule), into the
    user's registry folder. Raises UsageError (one line) for a document or rule it cannot use."""
    from batchrunner.openapi import read_document  # only `models add` reads OpenAPI

    path = Path(document).expanduser()
    try:
        doc = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    entry = read_document(doc)
    entry["price"] = PriceRule.parse(price).to_json()
    spec = ModelSpec.from_json(entry, str(path))
    shipped = shipped_model(spec.endpoint_id)
    if shipped is not None and not replace:  # a shipped entry is checked and priced: keep it
        raise UsageError(
            f"{spec.endpoint_id} ships with batchrunner ({describe_entry(shipped)}); nothing "
            "was written: pass --replace to use this document instead (your file then wins "
            "over the shipped entry until you delete it)"
        )
    return spec, save_user_model(spec, replace=replace)


def shipped_model(endpoint_id: str) -> ModelSpec | None:
    """The entry batchrunner ships for ``endpoint_id`` (whatever the user's folder holds)."""
    return _shipped().get(endpoint_id.strip("/"))


def describe_entry(spec: ModelSpec) -> str:
    """``10 fields, price 0.4/s if generate_audio=true; 0.2/s``: an entry, for a message."""
    price = spec.price.describe() if spec.price else "unknown"
    return f"{len(spec.fields)} fields, price {price}"


def set_price(endpoint_id: str, price: str) -> tuple[ModelSpec, Path]:
    """Give a registered endpoint another price rule (a user file overriding the shipped one)."""
    spec = get_model(endpoint_id)
    data = spec.to_json()
    data["price"] = PriceRule.parse(price).to_json()
    updated = ModelSpec.from_json(data, "--price")
    return updated, save_user_model(updated, replace=True)


def describe_fields(spec: ModelSpec) -> list[dict[str, Any]]:
    """One entry per input field: name, kind, required, default, choices, limits, file."""
    if spec.input_schema is None:
        return []
    props = schema.properties(spec.input_schema)
    files = set(spec.file_fields)
    rows = []
    for name, kind in spec.kinds.items():
        prop = props[name]
        limits = {k: prop[k] for k in _LIMITS if k in prop}
        if name in files:
            limits["max_file_bytes"] = spec.max_file_bytes(name)
        rows.append(
            {
                "name": name,
                "kind": {"text": "file", "list": "file list"}.get(kind.kind, kind.kind)
                if name in files
                else kind.kind,
                "required": kind.required,
                "default": prop.get("default"),
                "choices": list(kind.choices),
                "limits": limits,
                "description": str(prop.get("description") or ""),
            }
        )
    return rows


_LIMITS = ("minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems")
