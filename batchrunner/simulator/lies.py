"""Clips that do not match their request, on purpose: ``#lie:KIND`` in a prompt.

Like ``#policy`` (which fails a job), a marker in the prompt makes the simulator serve a video
that differs from what was asked, decided at submit so the result's ``file_size``, every ``Range``
request and a restarted simulator all agree. The kinds, each one change to the job's
:class:`~.clips.MediaShape`:

============  ===========================================================
``duration``  half the requested seconds
``aspect``    the aspect ratio turned (16:9 → 9:16; a square → 16:9)
``audio``     audio flipped: none when asked for, a track when not
``notvideo``  not a video at all: an HTML error page of the same size
============  ===========================================================

Several may be combined (``#lie:duration #lie:audio``); an unknown kind is ignored. The marker
is :attr:`SimulatorConfig.lie_marker`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from .clips import MediaShape


def _turned(aspect_ratio: str) -> str:
    across, _, down = aspect_ratio.partition(":")
    if not down or across.strip() == down.strip():
        return "16:9" if aspect_ratio.strip() != "16:9" else "9:16"
    return f"{down.strip()}:{across.strip()}"


LIES: dict[str, Callable[[MediaShape], MediaShape]] = {
    "duration": lambda shape: replace(shape, seconds=shape.seconds / 2),
    "aspect": lambda shape: replace(shape, aspect_ratio=_turned(shape.aspect_ratio)),
    "audio": lambda shape: replace(shape, audio=not shape.audio),
    "notvideo": lambda shape: replace(shape, playable=False),
}


def apply(shape: MediaShape, prompt: object, marker: str) -> MediaShape:
    """``shape`` changed by every lie the prompt asks for."""
    if not isinstance(prompt, str) or marker not in prompt:
        return shape
    for kind in re.findall(re.escape(marker) + r"([a-z]+)", prompt):
        lie = LIES.get(kind)
        if lie is not None:
            shape = lie(shape)
    return shape
