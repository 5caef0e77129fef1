"""Read fal's per-endpoint OpenAPI document into a registry entry (``batchrunner models add``).

fal publishes one document per endpoint (``https://fal.ai/api/openapi/queue/openapi.json?
endpoint_id=<id>``; the format is described in MODELS.md). What we take from it:

* the endpoint id: ``info.x-fal-metadata.endpointId``, else the one POST path;
* the input schema: the POST body's ``$ref``, with every ``$ref`` inlined and OpenAPI 3.0's
  ``nullable: true`` rewritten as JSON Schema (``anyOf [X, null]``), so it stands alone;
* the output field that holds the file: the result schema's property that is a ``File`` (an
  object with a ``url``), required ones first;
* the input field that switches sound on, when one boolean field's name says so and nothing
  else (:func:`audio_switch`), so that each clip is checked for the sound it was asked for.

A document that lacks any of these is refused with one line saying what is missing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from batchrunner.errors import UsageError


class OpenAPIError(UsageError):
    """Not a fal endpoint document we can read; the message names what is missing."""


def endpoint_of(doc: dict[str, Any]) -> str:
    meta = (doc.get("info") or {}).get("x-fal-metadata") or {}
    if isinstance(meta.get("endpointId"), str) and meta["endpointId"].strip("/"):
        return str(meta["endpointId"]).strip("/")
    posts = [p for p, item in (doc.get("paths") or {}).items() if "post" in (item or {})]
    if len(posts) != 1:
        raise OpenAPIError(
            "cannot tell the endpoint id: no info.x-fal-metadata.endpointId and "
            f"{len(posts)} POST paths (expected one)"
        )
    return str(posts[0]).strip("/")


def read_document(doc: Any) -> dict[str, Any]:
    """The registry entry (without a price) that ``doc`` describes; raises OpenAPIError."""
    if not isinstance(doc, dict) or "paths" not in doc or "components" not in doc:
        raise OpenAPIError("not an OpenAPI document (it needs 'paths' and 'components')")
    endpoint = endpoint_of(doc)
    paths = doc["paths"]
    post = (paths.get(f"/{endpoint}") or {}).get("post")
    if post is None:
        raise OpenAPIError(f"the document has no POST /{endpoint} (the submit call)")
    ref = _body_ref(post, f"POST /{endpoint}")
    schemas = (doc.get("components") or {}).get("schemas") or {}
    input_schema = _standalone(_resolve(ref, schemas), schemas)
    if input_schema.get("type") != "object" or not isinstance(input_schema.get("properties"), dict):
        raise OpenAPIError(f"the input schema {ref} is not an object with properties")
    input_schema.pop("examples", None)
    app = "/".join(endpoint.split("/")[:2])
    result = (paths.get(f"/{app}/requests/{{request_id}}") or {}).get("get")
    output: dict[str, Any] = {"field": _output_field(result, schemas) if result else "video"}
    audio = audio_switch(input_schema["properties"])
    if audio is not None:
        output["audio"] = audio
    return {
        "endpoint_id": endpoint,
        "title": str(input_schema.get("title") or endpoint).removesuffix("Input"),
        "source": f"fal OpenAPI document ({doc.get('info', {}).get('title', endpoint)})",
        "input": input_schema,
        "output": output,
    }


def audio_switch(props: Mapping[str, Any]) -> str | None:
    """The boolean input field that turns the clip's sound on, or None.

    Only a name made of ``audio`` or ``sound`` and words that switch something on
    (``generate_audio``, ``enable_audio``, ``with_audio``, ``audio``, ``sound``, PixVerse's
    ``generate_audio_switch``, ``audioEnabled``), with a true/false default (what a request
    that leaves it out asks for), and only one such field (``generate_audio`` among several):
    a switch read the wrong way round (``mute``, ``remove_audio``, ``keep_audio``) would flag
    every clip, so anything else is left unchecked, as before."""
    found = [
        str(name)
        for name, prop in props.items()
        if _is_switch(prop) and _SWITCH_NAME.fullmatch(_words(str(name)))
    ]
    if "generate_audio" in found:  # fal's own name for it
        return "generate_audio"
    return found[0] if len(found) == 1 else None


def _words(name: str) -> str:
    """``audioEnabled``, ``enable-audio`` → ``audio enabled``, ``enable audio``."""
    return " ".join(
        re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower().replace("-", "_").split("_")
    )


_ON = r"(?:generate|gen|enable|enabled|with|include|add|use|output|switch|on)"
_SWITCH_NAME = re.compile(rf"(?:{_ON} )*(?:audio|sound)(?: {_ON})*")


def _is_switch(prop: Any) -> bool:
    """A ``boolean`` field (or OpenAPI 3.0's nullable one: ``anyOf [boolean, null]``) with a
    true/false default."""
    if not isinstance(prop, dict) or not isinstance(prop.get("default"), bool):
        return False
    if prop.get("type") == "boolean":
        return True
    kinds = [part.get("type") for part in prop.get("anyOf") or () if isinstance(part, dict)]
    return "boolean" in kinds and set(kinds) <= {"boolean", "null"}


def _body_ref(operation: dict[str, Any], where: str) -> str:
    try:
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    except (KeyError, TypeError):
        raise OpenAPIError(f"{where} has no application/json request body $ref") from None
    return str(ref)


def _resolve(ref: str, schemas: dict[str, Any]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    name = ref.removeprefix(prefix)
    if not ref.startswith(prefix) or name not in schemas:
        raise OpenAPIError(f"the document refers to {ref}, which it does not define")
    return copy.deepcopy(schemas[name])


def _standalone(node: Any, schemas: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with ``$ref``s inlined and ``nullable`` made JSON Schema."""
    if isinstance(node, list):
        return [_standalone(item, schemas, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = str(node["$ref"])
        if ref in seen:
            raise OpenAPIError(f"the schema {ref} refers to itself; it cannot be inlined")
        inlined = _standalone(_resolve(ref, schemas), schemas, (*seen, ref))
        return {**inlined, **{k: v for k, v in node.items() if k != "$ref"}}
    out = {key: _standalone(value, schemas, seen) for key, value in node.items()}
    if out.pop("nullable", False):
        base = {k: v for k, v in out.items() if k not in _ANNOTATIONS}
        notes = {k: v for k, v in out.items() if k in _ANNOTATIONS}
        return {**notes, "anyOf": [base, {"type": "null"}]}
    return out


_ANNOTATIONS = ("title", "description", "default", "examples")


def _output_field(operation: dict[str, Any], schemas: dict[str, Any]) -> str:
    try:
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    except (KeyError, TypeError):
        return "video"
    output = _standalone(_resolve(str(ref), schemas), schemas)
    props: dict[str, Any] = output.get("properties") or {}
    required = list(output.get("required") or ())
    for name in [*required, *(n for n in props if n not in required)]:
        if _is_file(props.get(name)):
            return str(name)
    raise OpenAPIError(
        f"the result schema {ref} has no file field (an object with a 'url'); "
        "batchrunner downloads one file per job"
    )


def _is_file(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if "url" in (node.get("properties") or {}):
        return True
    return any(_is_file(part) for key in ("allOf", "anyOf", "oneOf") for part in node.get(key, []))
