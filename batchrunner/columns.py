"""Which column of a manifest feeds what: a model field, a control column (``id``, ``output``,
``count``, ``model``), or metadata kept with the job and not sent (one warning each).

A column that nearly names a field (``Resolution``, ``aspect-ratio``, ``genrate_audio``, a
second ``prompt``) or names it in other words (``seconds``, ``sound``, ``model_id``) is an
error, not metadata: a run would otherwise buy a clip with that field's default, not what was
meant (:mod:`batchrunner.spelling` decides what is near). So is a placeholder of
``--prompt-template`` or of an output name that no column fills, said once for the manifest
rather than once a row.
"""

from __future__ import annotations

from batchrunner.coerce import FieldKind
from batchrunner.errors import Problem
from batchrunner.expand import OUTPUT, Expansion, placeholders
from batchrunner.models import ModelSpec
from batchrunner.spelling import closest, hint, near_miss, synonym

CONTROL_COLUMNS = ("id", "output", "count", "model")


class Columns:
    """Which column feeds what: model fields, control columns, metadata (one warning each).

    A column that nearly names a field (``Resolution``, ``aspect-ratio``, ``genrate_audio``) is
    an error: run would otherwise buy a clip with that field's default, not what was meant.
    """

    def __init__(self, names: list[str], spec: ModelSpec, expansion: Expansion):
        self.problems: list[Problem] = []
        self.template_gaps = self._template_gaps(names, expansion)
        if not spec.known:  # not in the registry: everything but control columns is sent as read
            self.fields = {n: FieldKind(n, "any") for n in names if n not in CONTROL_COLUMNS}
            self.metadata: list[str] = []
            self.missing: set[str] = set()
            return
        declared = {n: f for n, f in spec.kinds.items() if n not in CONTROL_COLUMNS}
        provided = expansion.provided()
        self.fields = {n: f for n, f in declared.items() if n in names or n in provided}
        self.metadata = [n for n in names if n not in declared and n not in CONTROL_COLUMNS]
        absent = [n for n in [*declared, *CONTROL_COLUMNS] if n not in names]
        self.missing = {
            n for n, f in declared.items() if f.required and n not in names and n not in provided
        }
        found = ", ".join(repr(n) for n in names) or "none"
        hinted: set[str] = set()  # columns already named by a missing column's hint
        for name in sorted(self.missing, key=list(declared).index):
            guess = closest(name, self.metadata)
            hinted.add(guess or "")
            message = f"the manifest has no {name!r} column, which is required{hint(guess)}"
            self.problems.append(Problem(f"{message}; columns found: {found}", column=name))
        present = [n for n in [*declared, *CONTROL_COLUMNS] if n not in absent]
        templated = {name for _, text in templates(expansion) for name in placeholders(text)}
        for name in self.metadata:
            if name in hinted or name in templated:  # a column the prompt or name is built from
                continue
            twin = near_miss(name, present)
            near = near_miss(name, absent, parts=True) or synonym(name, absent)
            if twin or near:
                advice = (
                    f"it looks like a second {twin!r} column."
                    if twin
                    else f"did you mean {near!r}?"
                )
                message = (
                    f"{advice} Rename the column to {near or twin!r}"
                    + (" or remove one of the two" if twin else "")
                    + ", or rename it to something unlike a field to keep it as metadata"
                )
                self.problems.append(Problem(message, column=name))
                continue
            guess = closest(name, absent)
            advice = f"; did you mean {guess!r}?" if guess else ""
            message = f"unknown column, kept as metadata and not sent to the model{advice}"
            severity = "error" if expansion.strict else "warning"
            if expansion.strict:
                message = f"unknown column (--strict){advice}"
            self.problems.append(Problem(message, column=name, severity=severity))

    def _template_gaps(self, names: list[str], expansion: Expansion) -> set[str]:
        """The columns ``--prompt-template`` (or an output name given by ``--set``) names that
        no row can have: one problem each, said once for the manifest rather than once for
        every row."""
        given = {*names, *expansion.defaults, *(name for name, _ in expansion.matrix)}
        found = ", ".join(repr(n) for n in names) or "none"
        gaps: set[str] = set()
        for what, template in templates(expansion):
            for name in placeholders(template):
                if name in given or name in gaps:
                    continue
                gaps.add(name)
                guess = closest(name, names)
                advice = f" (did you mean {{{guess}}}?)" if guess else ""
                message = f"{what} uses {{{name}}}, but there is no {name!r} column{advice}"
                self.problems.append(Problem(f"{message}; columns found: {found}", column=name))
        return gaps


def templates(expansion: Expansion) -> list[tuple[str, str]]:
    """The templates every row is filled into: ``--prompt-template``, an output name ``--set``
    gives (``{aspect_ratio}/{id}``)."""
    found = [("the prompt template", expansion.prompt_template)]
    found.append(("the output name", expansion.defaults.get(OUTPUT)))
    return [(what, template) for what, template in found if isinstance(template, str)]
