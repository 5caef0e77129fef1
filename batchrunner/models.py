"""The model registry: input schemas and prices, as data.

A :class:`ModelSpec` names an endpoint, the pydantic model its input must satisfy, how a job's
price follows from its input, and which output field holds the file to download. Adding an
endpoint (say ``fal-ai/veo3.1/image-to-video``) is one more entry in :data:`REGISTRY`, not a new
code path. An endpoint that is not registered still runs: its fields pass through unvalidated
and it has no price (:func:`get_model` logs one warning).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

logger = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 8 * 1024 * 1024  # the provider's limit for an input image (also data: URIs)


def _suffixed(value: Any, suffix: str) -> Any:
    """Let a spreadsheet say ``8`` or ``8.0`` where the API wants ``"8s"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value}{suffix}"
    if isinstance(value, str) and value.strip().isdigit():
        return f"{value.strip()}{suffix}"
    return value.strip() if isinstance(value, str) else value


class Veo3ImageToVideoInput(BaseModel):
    """Input of ``fal-ai/veo3/image-to-video`` (see PROTOCOL.md)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=20000)
    image_url: str
    aspect_ratio: Literal["auto", "16:9", "9:16"] = "auto"
    duration: Literal["4s", "6s", "8s"] = "8s"
    resolution: Literal["720p", "1080p"] = "720p"
    generate_audio: bool = True
    auto_fix: bool = False
    negative_prompt: str | None = None
    seed: int | None = None
    safety_tolerance: Literal["1", "2", "3", "4", "5", "6"] = "4"

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        return value

    @field_validator("image_url")
    @classmethod
    def _image_url_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "data:")):
            raise ValueError("must be an http(s) URL, a data: URI or a local image file")
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _duration_seconds(cls, value: Any) -> Any:
        return _suffixed(value, "s")

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution_p(cls, value: Any) -> Any:
        return _suffixed(value, "p")

    @field_validator("safety_tolerance", mode="before")
    @classmethod
    def _tolerance_text(cls, value: Any) -> Any:
        return _suffixed(value, "")


@dataclass(frozen=True)
class PerSecondPrice:
    """Price = seconds of video × a rate chosen by one boolean field (audio on or off)."""

    duration_field: str
    rate_field: str
    rate_if_true: float
    rate_if_false: float

    def __call__(self, payload: Mapping[str, Any]) -> float:
        seconds = float(str(payload[self.duration_field]).rstrip("s"))
        rate = self.rate_if_true if payload[self.rate_field] else self.rate_if_false
        return round(seconds * rate, 4)


@dataclass(frozen=True)
class ModelSpec:
    endpoint_id: str
    input_model: type[BaseModel] | None  # None: not registered, input passes through
    price: PerSecondPrice | None = None
    price_fields: tuple[str, ...] = ()  # the fields a plan breaks the estimate down by
    file_fields: tuple[str, ...] = ()  # input fields that may name a local file (sent as data:)
    output_field: str = "video"  # result[output_field] = {"url", "file_size", ...}
    default_extension: str = ".mp4"
    aliases: tuple[str, ...] = field(default=())

    @property
    def known(self) -> bool:
        return self.input_model is not None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.input_model.model_fields) if self.input_model else ()

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The full request body for ``payload``: defaults filled, values normalised.

        Raises :class:`pydantic.ValidationError`; the manifest loader turns it into problems.
        """
        if self.input_model is None:
            return dict(payload)
        return self.input_model.model_validate(dict(payload)).model_dump(exclude_none=True)

    def cost(self, payload: Mapping[str, Any]) -> float | None:
        return None if self.price is None else self.price(payload)


VEO3_PRICE = PerSecondPrice("duration", "generate_audio", rate_if_true=0.40, rate_if_false=0.20)

REGISTRY: dict[str, ModelSpec] = {
    spec.endpoint_id: spec
    for spec in [
        ModelSpec(
            endpoint_id="fal-ai/veo3/image-to-video",
            input_model=Veo3ImageToVideoInput,
            price=VEO3_PRICE,
            price_fields=("duration", "generate_audio", "resolution"),
            file_fields=("image_url",),
        ),
    ]
}

DEFAULT_MODEL = "fal-ai/veo3/image-to-video"
_warned: set[str] = set()


def get_model(endpoint_id: str) -> ModelSpec:
    """The registered spec, or a pass-through spec (one warning per process) for others."""
    if endpoint_id in REGISTRY:
        return REGISTRY[endpoint_id]
    if endpoint_id not in _warned:
        _warned.add(endpoint_id)
        logger.warning(
            "model %s is not in the registry: inputs are sent unvalidated and it has no price",
            endpoint_id,
        )
    return ModelSpec(endpoint_id=endpoint_id, input_model=None)


def split_endpoint(endpoint_id: str) -> tuple[str, str, str]:
    """``fal-ai/veo3/image-to-video`` → ``("fal-ai", "veo3", "image-to-video")``.

    Status, result and cancel URLs drop the sub-path: ``{owner}/{app}/requests/{id}``.
    """
    parts = endpoint_id.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"not an endpoint id (owner/app[/path]): {endpoint_id!r}")
    return parts[0], parts[1], "/".join(parts[2:])
