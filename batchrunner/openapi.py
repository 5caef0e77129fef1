"""Read fal's per-endpoint OpenAPI document into a registry entry (``batchrunner models add``).

fal publishes one document per endpoint (``https://fal.ai/api/openapi/queue/openapi.json?
endpoint_id=<id>``; the format is described in MODELS.md). What we take from it:

* the endpoint id: ``info.x-fal-metadata.endpointId``, else the one POST path;
* the input schema: the POST body's ``$ref``, with every ``$ref`` inlined and OpenAPI 3.0's
  ``nullable: true`` rewritten as JSON Schema (``anyOf [X, null]``), so it stands alone;
* the output field that holds the file: the result schema's property that is a ``File`` (an
  object with a ``url``), required ones first.

A document that lacks any of these is refused with one line saying what is missing.
"""

from __future__ import annotations

import copy
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
    output_field = _output_field(result, schemas) if result else "video"
    return {
        "endpoint_id": endpoint,
        "title": str(input_schema.get("title") or endpoint).removesuffix("Input"),
        "source": f"fal OpenAPI document ({doc.get('info', {}).get('title', endpoint)})",
        "input": input_schema,
        "output": {"field": output_field},
    }


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
