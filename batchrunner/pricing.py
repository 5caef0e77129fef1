"""Price rules: how a job's price follows from its request body, as data.

A rule is JSON in a model's registry file (``"price": {...}``) or, for ``models add --price`` and
``models price``, either that JSON or a one-line shorthand. Every shape fal uses:

==================  ==========================================================================
``per``             price of one job
==================  ==========================================================================
``video``           ``rate``                                   a flat price per video
``second``          ``base_usd + rate × max(0, s − included_seconds)``   s = requested seconds
``video_token``     ``rate × W × H × fps × s / 1024 / 1e6``    rate per million video tokens
==================  ==========================================================================

``rate`` is the first entry of ``rates`` whose ``when`` matches the request (each ``when`` names
fields and the value, or list of values, they must have); the last entry has no ``when``.
Veo 3.1, in full::

    {"per": "second", "seconds": "duration",
     "rates": [{"when": {"resolution": "4k", "generate_audio": true}, "usd": 0.60},
               {"when": {"resolution": "4k"}, "usd": 0.40},
               {"when": {"generate_audio": true}, "usd": 0.40},
               {"usd": 0.20}]}

The same as shorthand (clauses separated by ``;``, first match wins)::

    0.60/s if resolution=4k and generate_audio=true; 0.40/s if resolution=4k;
    0.40/s if generate_audio=true; 0.20/s

``0.35 + 0.07/s over 5s`` is Kling's "$0.35 for 5 s, $0.07 per extra second"; ``0.50/video`` a
flat price. A rule that fal's pages do not confirm carries ``"confirmed": false`` and a ``note``.

Billing: a response's ``x-fal-billable-units`` is read as the rule's unit (seconds, videos or
video tokens) and priced with the same rule (:meth:`PriceRule.billed`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from batchrunner.errors import UsageError

Per = Literal["video", "second", "video_token"]
PER: tuple[str, ...] = ("video", "second", "video_token")
UNIT_NAMES = {"video": "video", "second": "s", "video_token": "Mtok"}


class PriceRuleError(UsageError):
    """A price rule that cannot be read; the message says what is wrong and how to write it."""


def _text(value: Any) -> str:
    """A condition's value as text: ``True`` → ``"true"``, ``8.0`` → ``"8"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _key(value: Any) -> str:
    """Values compare as text, case-insensitively: ``True`` = ``"true"``, ``"4K"`` = ``"4k"``."""
    return _text(value).lower()


def seconds_of(value: Any) -> float | None:
    """``"8s"`` → 8, ``"5"`` → 5, ``10`` → 10; None when the value says no number of seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _SECONDS.fullmatch(str(value))
    return float(match.group(1)) if match else None


_SECONDS = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*s?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Rate:
    usd: float
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()  # field -> accepted values (as text)

    def matches(self, payload: Mapping[str, Any]) -> bool:
        return all(
            _key(payload.get(name)) in {v.lower() for v in values} for name, values in self.when
        )

    def describe(self, unit: str) -> str:
        text = f"{self.usd:g}/{unit}"
        if self.when:
            conditions = " and ".join(f"{name}={'|'.join(values)}" for name, values in self.when)
            text += f" if {conditions}"
        return text


@dataclass(frozen=True)
class PriceRule:
    per: Per
    rates: tuple[Rate, ...]
    seconds: str = "duration"  # the field that holds the requested seconds
    base_usd: float = 0.0  # per second: what the first `included_seconds` cost
    included_seconds: float = 0.0
    frame_field: str | None = None  # per video token: the field choosing the frame size
    frame_sizes: tuple[tuple[str, tuple[int, int]], ...] = ()
    fps: float = 24.0
    confirmed: bool = True
    note: str = ""
    source: str = ""

    # ------------------------------------------------------------------ pricing

    def rate(self, payload: Mapping[str, Any]) -> float:
        for rate in self.rates:
            if rate.matches(payload):
                return rate.usd
        raise AssertionError("a rule always ends with an unconditional rate")  # from_json checks

    def units(self, payload: Mapping[str, Any]) -> float:
        """What the job consumes in the rule's unit: 1 video, s seconds, or video tokens."""
        if self.per == "video":
            return 1.0
        seconds = seconds_of(payload.get(self.seconds))
        if seconds is None:
            raise ValueError(f"the price needs {self.seconds!r}, and the request has none")
        if self.per == "second":
            return seconds
        width, height = self._frame(payload)
        return width * height * self.fps * seconds / 1024

    def cost(self, payload: Mapping[str, Any]) -> float:
        """The price of one job, in USD, rounded to 1/100 of a cent.

        It follows from the price fields alone, and a batch repeats a handful of their
        combinations: each combination (values and their types: ``True`` is not ``1``) is
        priced once."""
        values = tuple(map(payload.get, self.fields))
        key = (values, tuple(map(type, values)))
        try:
            return self._costs[key]
        except KeyError:
            cost = self._costs[key] = self.billed(payload, self.units(payload))
            return cost
        except TypeError:  # an unhashable value (a list): priced every time
            return self.billed(payload, self.units(payload))

    @functools.cached_property
    def _costs(self) -> dict[tuple[Any, ...], float]:
        """Prices by combination of the price fields' values (see :meth:`cost`)."""
        return {}

    def billed(self, payload: Mapping[str, Any], units: float) -> float:
        """What ``units`` of this job's kind cost (the rate follows the job's own input)."""
        rate = self.rate(payload)
        if self.per == "video":
            usd = rate * units
        elif self.per == "second":
            usd = self.base_usd + rate * max(0.0, units - self.included_seconds)
        else:
            usd = rate * units / 1e6
        return round(usd, 4)

    def _frame(self, payload: Mapping[str, Any]) -> tuple[int, int]:
        sizes = dict(self.frame_sizes)
        key = _key(payload.get(self.frame_field)) if self.frame_field else ""
        if key not in sizes:
            raise ValueError(f"the price has no frame size for {self.frame_field}={key!r}")
        return sizes[key]

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """The request fields the price depends on (a plan's breakdown)."""
        names: list[str] = []
        if self.per != "video":
            names.append(self.seconds)
        if self.frame_field:
            names.append(self.frame_field)
        for rate in self.rates:
            names += [name for name, _ in rate.when]
        return tuple(dict.fromkeys(names))

    def unmatchable(
        self, choices: Mapping[str, Sequence[Any]]
    ) -> tuple[str, str, list[str]] | None:
        """The first condition that no request can meet, given the values each field may
        take (``choices``: a schema's ``enum``): its field, its value, and the field's values
        as text. ``resolution=1080`` against ``1080p`` is a clause that never applies, so
        those requests would be priced by the next one."""
        for rate in self.rates:
            for name, values in rate.when:
                if name not in choices:
                    continue
                allowed = [_text(choice) for choice in choices[name]]
                keys = {choice.lower() for choice in allowed}
                for value in values:
                    if value.lower() not in keys:
                        return name, value, allowed
        return None

    def unsized(self, choices: Mapping[str, Sequence[Any]]) -> tuple[str, str, list[str]] | None:
        """A value the request may take that a per-token rule has no frame size for (its
        requests would be unpriced, a ``--budget`` refused): its field, the value, and the
        sizes the rule has."""
        field = self.frame_field
        if self.per != "video_token" or field is None or field not in choices:
            return None
        sizes = dict(self.frame_sizes)
        for choice in choices[field]:
            if _key(choice) not in sizes:
                return field, _text(choice), list(sizes)
        return None

    # ------------------------------------------------------------------ text

    def describe(self) -> str:
        """The rule as shorthand (token rules as their formula)."""
        unit = UNIT_NAMES[self.per]
        clauses = [rate.describe(unit) for rate in self.rates]
        if self.per == "second" and (self.base_usd or self.included_seconds):
            clauses = [
                f"{self.base_usd:g} + {c.replace('/s', f'/s over {self.included_seconds:g}s', 1)}"
                for c in clauses
            ]
        text = "; ".join(clauses)
        if self.per == "video_token":
            sizes = ", ".join(f"{k}={w}x{h}" for k, (w, h) in self.frame_sizes)
            text += f" (tokens = W×H×{self.fps:g} fps×{self.seconds}/1024; {sizes})"
        elif self.per == "second":
            text += f" (s = {self.seconds})"
        return text

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"per": self.per}
        if self.per != "video":
            data["seconds"] = self.seconds
        if self.base_usd or self.included_seconds:
            data["base_usd"] = self.base_usd
            data["included_seconds"] = self.included_seconds
        if self.per == "video_token":
            data["frame"] = {
                "field": self.frame_field,
                "sizes": {k: [w, h] for k, (w, h) in self.frame_sizes},
            }
            data["fps"] = self.fps
        data["rates"] = [
            {**({"when": {n: _plain(v) for n, v in r.when}} if r.when else {}), "usd": r.usd}
            for r in self.rates
        ]
        data["confirmed"] = self.confirmed
        if self.note:
            data["note"] = self.note
        if self.source:
            data["source"] = self.source
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "price") -> PriceRule:
        """Read a rule (raises :class:`PriceRuleError` naming what is wrong)."""
        if not isinstance(data, dict):
            raise PriceRuleError(f"{where}: a price rule is a JSON object, got {data!r}")
        known = {"per", "seconds", "base_usd", "included_seconds", "frame", "fps", "rates"}
        unknown = set(data) - known - {"confirmed", "note", "source"}
        if unknown:
            raise PriceRuleError(
                f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}"
            )
        per = data.get("per")
        if per not in PER:
            raise PriceRuleError(f"{where}: 'per' must be one of {', '.join(PER)}, got {per!r}")
        rates = tuple(
            _rate(item, f"{where}.rates[{i}]") for i, item in enumerate(_list(data, where))
        )
        if not rates or rates[-1].when:
            raise PriceRuleError(
                f"{where}: the last rate must have no 'when' (it prices every other request)"
            )
        per_second_only = [key for key in ("base_usd", "included_seconds") if data.get(key)]
        if per != "second" and per_second_only:  # stored, and never applied: a price too low
            raise PriceRuleError(
                f'{where}: {per_second_only[0]!r} goes with "per": "second" (a base '
                "price with seconds included), not a price per " + UNIT_NAMES[per]
            )
        frame_field: str | None = None
        sizes: tuple[tuple[str, tuple[int, int]], ...] = ()
        if per == "video_token":
            frame = data.get("frame")
            if not isinstance(frame, dict) or not isinstance(frame.get("sizes"), dict):
                raise PriceRuleError(
                    f'{where}: a per-token price needs "frame": {{"field": ..., "sizes": '
                    '{"720p": [1280, 720], ...}}'
                )
            frame_field = str(frame.get("field") or "resolution")
            sizes = tuple(
                (_key(k), _size(v, f"{where}.frame.sizes.{k}")) for k, v in frame["sizes"].items()
            )
        return cls(
            per=per,
            rates=rates,
            seconds=str(data.get("seconds", "duration")),
            base_usd=_number(data.get("base_usd", 0.0), f"{where}.base_usd"),
            included_seconds=_number(
                data.get("included_seconds", 0.0), f"{where}.included_seconds"
            ),
            frame_field=frame_field,
            frame_sizes=sizes,
            fps=_number(data.get("fps", 24.0), f"{where}.fps"),
            confirmed=bool(data.get("confirmed", True)),
            note=str(data.get("note", "")),
            source=str(data.get("source", "")),
        )

    @classmethod
    def parse(cls, text: str) -> PriceRule:
        """A rule from ``--price``: JSON, or shorthand (see the module docstring)."""
        text = text.strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise PriceRuleError(f"--price: not valid JSON: {exc}") from None
            return cls.from_json(data, "--price")
        return _parse_shorthand(text)


def cents_up(usd: float) -> float:
    """``usd`` rounded up to the cent (float noise aside): the budget that covers it."""
    return math.ceil(round(usd * 100, 6)) / 100


def flat(usd: float, note: str = "") -> PriceRule:
    return PriceRule(per="video", rates=(Rate(usd),), note=note)


def _plain(values: tuple[str, ...]) -> Any:
    items: list[Any] = [True if v == "true" else False if v == "false" else v for v in values]
    return items[0] if len(items) == 1 else items


def _list(data: dict[str, Any], where: str) -> list[Any]:
    rates = data.get("rates")
    if not isinstance(rates, list):
        raise PriceRuleError(f'{where}: "rates" must be a list like [{{"usd": 0.4}}]')
    return rates


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PriceRuleError(f"{where}: must be a number, got {value!r}")
    if value < 0:
        raise PriceRuleError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _size(value: Any, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise PriceRuleError(f"{where}: a frame size is [width, height], got {value!r}")
    return value[0], value[1]


def _rate(item: Any, where: str) -> Rate:
    if not isinstance(item, dict) or "usd" not in item or set(item) - {"usd", "when"}:
        raise PriceRuleError(
            f'{where}: a rate is {{"usd": 0.4}} or {{"when": {{...}}, "usd": 0.4}}'
        )
    when = item.get("when", {})
    if not isinstance(when, dict):
        raise PriceRuleError(f'{where}: "when" must map field names to values')
    conditions = tuple(
        (str(name), tuple(_text(v) for v in (value if isinstance(value, list) else [value])))
        for name, value in when.items()
    )
    return Rate(_number(item["usd"], f"{where}.usd"), conditions)


_CLAUSE = re.compile(
    r"""^\$?(?:(?P<base>[0-9.]+)\s*\+\s*)?           # 0.35 +
        \$?(?P<usd>[0-9.]+)\s*/\s*(?P<unit>s|sec|second|video|job)  # 0.07/s
        (?:\s+over\s+(?P<over>[0-9.]+)\s*s)?            # over 5s
        (?:\s+if\s+(?P<when>.+))?$""",
    re.VERBOSE | re.IGNORECASE,
)
SHORTHAND_HELP = (
    "write USD/s or USD/video, with conditions and several clauses if the price depends on "
    "the request: '0.60/s if resolution=4k and generate_audio=true; 0.40/s if "
    "resolution=4k; 0.20/s', '0.35 + 0.07/s over 5s', '0.50/video'; or give the rule as JSON"
)


def _parse_shorthand(text: str) -> PriceRule:
    rates: list[Rate] = []
    pers: set[str] = set()
    bases: set[tuple[float, float]] = set()
    for clause in (c.strip() for c in text.split(";")):
        match = _CLAUSE.match(clause)
        if not clause or match is None:
            raise PriceRuleError(f"--price: cannot read {clause!r}; {SHORTHAND_HELP}")
        unit = match["unit"].lower()
        per = "video" if unit in ("video", "job") else "second"
        pers.add(per)
        try:
            usd = float(match["usd"])
            base = float(match["base"] or 0)
            over = float(match["over"] or 0)
        except ValueError:
            raise PriceRuleError(f"--price: {clause!r} has a number that is not one") from None
        if per == "second":
            bases.add((base, over))
        elif base or over:
            raise PriceRuleError(f"--price: {clause!r}: 'base +' and 'over' go with a /s rate")
        conditions: list[tuple[str, tuple[str, ...]]] = []
        for part in re.split(r"\s+and\s+", match["when"] or "", flags=re.IGNORECASE):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise PriceRuleError(f"--price: {part!r}: write FIELD=VALUE (or FIELD=A|B)")
            values = tuple(_text(v) for v in value.split("|"))
            conditions.append((name.strip(), values))
        rates.append(Rate(usd, tuple(conditions)))
    if len(pers) > 1 or len(bases) > 1:
        raise PriceRuleError("--price: every clause must use the same unit and base")
    if rates[-1].when:
        raise PriceRuleError("--price: end with a clause without 'if' that prices the rest")
    base, over = bases.pop() if bases else (0.0, 0.0)
    return PriceRule(
        per="second" if "second" in pers else "video",
        rates=tuple(rates),
        base_usd=base,
        included_seconds=over,
        note="set with --price",
    )
