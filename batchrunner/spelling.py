"""What a misspelt name was meant to be: the one home of every "did you mean".

Each kind of name is matched as its mistakes are made:

* an option, a setting, a choice (:func:`did_you_mean`): the closest spelling, if any is close;
* a manifest column (:func:`near_miss`, :func:`closest`): the same words in other letters or
  separators, a unit in brackets (``Duration (s)``), a typo of a letter or two, the field's
  words cut short (``neg_prompt``), or another word people use for it (:data:`SYNONYMS`:
  ``seconds``, ``sound``, ``model_id``); a near miss is an error, not metadata, since a run
  would otherwise buy a clip with that field's default;
* a model id (:func:`near_models`): a pasted page address, fal's prefix left out, other case;
* a job id (:func:`near_id`): other case, a number padded otherwise (``shot-7``, ``shot-07``).

Nothing here raises or logs: the callers word the message. ``difflib`` is imported only when a
mistake is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``names`` to a misspelt ``name``, or ""."""
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1)
    return hint(close[0] if close else None)


def hint(guess: str | None) -> str:
    """`` (did you mean 'x'?)`` for a ``guess``, "" for none: how every suggestion is said."""
    return f" (did you mean {guess!r}?)" if guess else ""


# -- manifest columns ---------------------------------------------------------------------------


def near_miss(name: str, candidates: Sequence[str], *, parts: bool = False) -> str | None:
    """The candidate ``name`` nearly is: the same but for case, separators, a unit in brackets
    (``Duration (s)``) or a small typo; with ``parts``, also a run of the candidate's words,
    each word whole or cut short (``audio``, ``aspect``, ``neg_prompt``, ``gen_audio``)."""
    key = normalized(_UNIT.sub("", name))
    for candidate in candidates:
        other = normalized(candidate)
        if key == other:
            return candidate
        if min(len(key), len(other)) >= 4 and distance(key, other) <= (1 if len(other) <= 6 else 2):
            return candidate
        if parts and _words_of(key.split("_"), other.split("_")):
            return candidate
    return None


_UNIT = re.compile(r"\s*[(\[][^)\]]*[)\]]\s*$")  # "(s)", "[sec]" at the end of a header

# Other words a sheet heads a field's column with, which no spelling rule reaches (normalized,
# units in brackets and a trailing ``#`` dropped). Each names a field that changes what is bought
# (its length, sound, size, model, takes) or which clip comes back (its seed, its frame).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "duration": (
        "seconds", "secs", "sec", "length", "clip_length", "video_length", "clip_duration",
        "video_duration", "duration_seconds", "duration_secs", "duration_sec", "runtime",
    ),
    "generate_audio": (
        "sound", "sounds", "with_sound", "with_audio", "has_audio", "enable_audio",
        "audio_enabled", "audio_on",
    ),
    "resolution": ("res", "video_resolution", "output_resolution"),
    "aspect_ratio": ("orientation", "video_aspect_ratio"),
    "seed": ("random_seed", "seed_number", "seed_no"),
    "model": ("model_id", "model_name", "endpoint", "endpoint_id", "fal_model"),
    "count": ("takes", "copies", "variations", "number_of_takes", "num_takes"),
}  # fmt: skip


def synonym(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate that ``name`` is another word for (:data:`SYNONYMS`), if any."""
    key = normalized(_UNIT.sub("", name)).rstrip("_#")
    return next((c for c in candidates if key == c or key in SYNONYMS.get(c, ())), None)


def closest(name: str, candidates: Sequence[str]) -> str | None:
    """The candidate ``name`` was probably meant to be, a looser match than :func:`near_miss`
    (for a hint, not an error): the same words, a close spelling, or one contains the other."""
    import difflib

    by_norm = {normalized(c): c for c in candidates}
    key = normalized(name)
    if key in by_norm:
        return by_norm[key]
    close = difflib.get_close_matches(key, list(by_norm), n=1, cutoff=0.7)
    if close:
        return by_norm[close[0]]
    if len(key) >= 4:
        for norm, original in by_norm.items():
            if key in norm or (len(norm) >= 4 and norm in key):
                return original
    return None


def _words_of(words: list[str], field_words: list[str]) -> bool:
    """Whether ``words`` begin a run of ``field_words``, word by word (at least 3 letters of
    each): ``["neg", "prompt"]`` of ``["negative", "prompt"]``."""
    if not all(words) or len(words) > len(field_words):
        return False
    return any(
        all(
            field_words[start + k].startswith(word)
            and (len(word) >= 3 or word == field_words[start + k])
            for k, word in enumerate(words)
        )
        for start in range(len(field_words) - len(words) + 1)
    )


def distance(a: str, b: str) -> int:
    """Edit distance: inserts, deletes, substitutions and swaps of two neighbours, each 1 (the
    optimal string alignment distance; a swap is one slip of the fingers, not two)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            best = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, previous2[j - 2] + 1)
            current.append(best)
        previous2, previous = previous, current
    return previous[-1]


def normalized(name: str) -> str:
    """A column name as it compares: lower-case, runs of spaces, ``-`` and ``.`` made ``_``."""
    return re.sub(r"[\s\-.]+", "_", name.strip().lower())


# -- job ids ------------------------------------------------------------------------------------


def near_id(name: str, known: Sequence[str]) -> str | None:
    """The id among ``known`` a mistyped ``name`` most likely means: the same but for case or
    the zeros its numbers are padded with (``Shot-7`` for ``shot-07``); else the closest
    spelling, if one is close."""
    import difflib

    key = _unpadded(name)
    for candidate in known:
        if _unpadded(candidate) == key:
            return candidate
    close = difflib.get_close_matches(name, known, n=1)
    return close[0] if close else None


def _unpadded(text: str) -> str:
    return re.sub(r"\d+", lambda number: str(int(number.group())), text.casefold())


# -- model ids ----------------------------------------------------------------------------------


def near_models(endpoint_id: str, known: Sequence[str]) -> list[str]:
    """The registered ids a mistyped one most likely means, best first (at most two): the one
    it is but for case, ``_`` for ``-``, spaces, a pasted page address or fal's own prefix
    (``FAL-AI/Veo3.1``, ``https://fal.ai/models/fal-ai/veo3.1/api``, ``veo3.1``) alone; else
    the closest spellings (to fal's without their owner when it names none: ``veo31``); else
    the one id that contains every part of it (``fal-ai/hailuo-02``)."""
    import difflib

    plain: dict[str, str] = {}
    for name in known:
        plain.setdefault(_plain_id(name), name)
    wanted = _plain_id(endpoint_id)
    for same in (wanted, f"fal-ai/{wanted}"):  # `veo3.1/image-to-video`: the owner left out
        if same in plain:
            return [plain[same]]
    # `veo31`: an id of fal's with the owner left out is compared without fal's either
    unowned = {key.removeprefix("fal-ai/"): name for key, name in plain.items()}
    keyed = plain if "/" in wanted else unowned
    close = difflib.get_close_matches(wanted, list(keyed), n=2, cutoff=0.6)
    if close:
        return [keyed[name] for name in close]
    parts = [part for part in wanted.split("/") if part and part != "fal-ai"]
    having = [name for key, name in plain.items() if parts and all(p in key for p in parts)]
    return having if len(having) == 1 else []


def _plain_id(text: str) -> str:
    """An endpoint id as it compares for a suggestion: lower-case, ``-`` for ``_`` and spaces,
    without the address of fal's page or queue around it."""
    text = text.strip().casefold()
    text = re.sub(r"^(?:https?://)?(?:www\.)?(?:fal\.ai/models/|queue\.fal\.run/)", "", text)
    text = re.sub(r"/(?:api|playground|llms\.txt)/?$", "", text)
    return re.sub(r"[\s_]+", "-", text).strip("/")
