"""The README's guarantees list names tests that exist, and `make mutate` checks each mutation
with tests that list names: renaming a test cannot silently orphan a guarantee."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.mutate import MUTATIONS, problem

ROOT = Path(__file__).resolve().parent.parent


def guarantees_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## What is guaranteed")
    return text[start : text.index("\n## ", start + 1)]


def named_in_readme() -> set[str]:
    return set(re.findall(r"`(test_\w+)`", guarantees_section()))


def defined_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_guarantees_name_exists() -> None:
    defined = set().union(*(defined_in(p) for p in (ROOT / "tests").glob("test_*.py")))
    named = named_in_readme()
    assert len(named) >= 30
    assert named - defined == set()


def test_every_mutation_is_checked_by_tests_the_guarantees_name() -> None:
    named = named_in_readme()
    for mutation in MUTATIONS:
        assert mutation.tests, mutation.name
        for test in mutation.tests:
            file, _, name = test.partition("::")
            assert name in defined_in(ROOT / file), f"{mutation.name}: no {test}"
            assert name in named, f"{mutation.name}: {name} is not named in the README's list"


def test_every_mutation_still_finds_the_code_it_breaks() -> None:
    """A mutation whose snippet the code no longer holds checks nothing (`make mutate` calls it
    STALE): found here, by the change that made it so, not by the next mutation run."""
    stale = {m.name: why for m in MUTATIONS if (why := problem(m)) is not None}
    assert stale == {}
