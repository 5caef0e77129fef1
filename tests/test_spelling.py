"""What a misspelt name was meant to be (``batchrunner.spelling``): the suggestions every
"did you mean" of a manifest, an option and a model id is made of."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchrunner.models import registry
from batchrunner.spelling import (
    closest,
    did_you_mean,
    distance,
    near_id,
    near_miss,
    near_models,
)

FIELDS = ["prompt", "image_url", "duration", "aspect_ratio", "resolution", "generate_audio"]


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("Resolution", "resolution"),  # case
        ("aspect-ratio", "aspect_ratio"),  # separator
        ("Aspect Ratio", "aspect_ratio"),
        ("genrate_audio", "generate_audio"),  # a letter left out
        ("durration", "duration"),  # a letter doubled
        ("promtp", "prompt"),  # two letters swapped: one slip
        ("Duration (s)", "duration"),  # a unit in brackets
        ("image_url [link]", "image_url"),
    ],
)
def test_a_near_miss_names_the_field_it_nearly_is(column: str, field: str) -> None:
    assert near_miss(column, FIELDS) == field


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("neg_prompt", "negative_prompt"),
        ("gen_audio", "generate_audio"),
        ("audio", "generate_audio"),
    ],
)
def test_a_field_s_words_cut_short_are_a_near_miss_only_where_asked(
    column: str, field: str
) -> None:
    assert near_miss(column, [field], parts=True) == field
    assert near_miss(column, [field]) is None


@pytest.mark.parametrize("column", ["scene", "notes", "shot", "ar", "seed_2024"])
def test_a_column_like_no_field_is_no_near_miss(column: str) -> None:
    """Metadata stays metadata: short names are not matched by a typo's allowance."""
    assert near_miss(column, FIELDS, parts=True) is None


def test_closest_is_a_looser_hint_than_a_near_miss() -> None:
    assert closest("prompt_text", ["prompt", "seed"]) == "prompt"  # one contains the other
    assert near_miss("prompt_text", ["prompt", "seed"]) is None
    assert closest("Image URL", ["image_url"]) == "image_url"
    assert closest("zzz", FIELDS) is None


def test_did_you_mean_names_the_closest_or_nothing() -> None:
    assert did_you_mean("concurency", ["budget", "concurrency"]) == " (did you mean 'concurrency'?)"
    assert did_you_mean("xyzzy", ["budget", "concurrency"]) == ""


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("FAL-AI/Veo3.1", ["fal-ai/veo3.1"]),  # other case
        ("https://fal.ai/models/fal-ai/veo3.1/api", ["fal-ai/veo3.1"]),  # the page's address
        ("veo3.1/image-to-video", ["fal-ai/veo3.1/image-to-video"]),  # fal's prefix left out
        (
            "fal-ai/veo3/image-to-vidoe",
            ["fal-ai/veo3/image-to-video", "fal-ai/veo3.1/image-to-video"],
        ),
        ("hailuo-02", ["fal-ai/minimax/hailuo-02/standard/image-to-video"]),  # a part of one
        ("veo31", ["fal-ai/veo3.1", "fal-ai/veo3.1/fast"]),  # fal's, mistyped, owner left out
        ("sora-2", []),  # like nothing registered
    ],
)
def test_a_mistyped_model_id_suggests_the_registered_ones_it_means(
    typed: str, meant: list[str]
) -> None:
    assert near_models(typed, list(registry())) == meant


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("shot-7", "shot-07"),  # a number padded otherwise, though shot-10 is as close a spelling
        ("SHOT-1", "shot-01"),
        ("row0012~t2", "row12~t2"),
        ("shot-071", "shot-07"),  # else the closest spelling
        ("ghost", None),
    ],
)
def test_a_mistyped_job_id_suggests_the_job_it_nearly_is(typed: str, meant: str | None) -> None:
    assert near_id(typed, ["shot-01", "shot-07", "shot-10", "row12~t2"]) == meant


# -- the edit distance, against its definition ---------------------------------------------------


def _reference(a: str, b: str) -> int:
    """Optimal string alignment distance by its recursive definition (small strings only)."""

    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        best = min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
        if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
            best = min(best, d(i - 2, j - 2) + 1)
        return best

    return d(len(a), len(b))


WORDS = st.text(alphabet="abc_", max_size=7)


@given(WORDS, WORDS)
def test_distance_is_the_optimal_string_alignment_distance(a: str, b: str) -> None:
    assert distance(a, b) == _reference(a, b) == distance(b, a)


@given(st.text(alphabet="abcdef", min_size=2, max_size=12), st.data())
def test_one_slip_of_the_fingers_is_distance_one(word: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(word) - 2))
    swapped = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    assert distance(word, swapped) == (0 if swapped == word else 1)
    assert distance(word, word[:at] + word[at + 1 :]) == 1  # one left out
