"""How long to wait for an origin that stopped answering: a network that dropped is waited for,
a wrong address is not.

A connection that cannot be made (refused, timed out, no route, no DNS answer) to an origin
that has not answered once in this run is a wrong address or a machine offline: it is out of
reach after :data:`FIRST_CONTACT` seconds, and the run says so. To an origin that has answered,
the network dropped mid-run (Wi-Fi, a router restarting at night, the provider's edge): its
requests wait for it, each retried without using up its own retry budget
(:func:`batchrunner.retry.call_with_retry`), for up to :data:`PATIENCE` seconds since the
first failure; only then is it out of reach. Jobs in flight carry on at the provider meanwhile,
and their results are kept there for about an hour, so the wait loses nothing.

A request that did connect and then failed is not this module's business: it is retried (or
found ambiguous) as before.

An outage being waited for is told to a listener once it lasts :data:`SAY_AFTER` seconds, and
again when it ends (the origin answers, or is out of reach): :class:`Waits` gathers a run's
origins and records what it waits for on the run's row in the ledger, for ``batchrunner
status`` in another terminal to show ("waiting for the network since 14:03").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

FIRST_CONTACT = 10.0  # seconds: an origin never reached in this run is out of reach after these
PATIENCE = 300.0  # seconds: one that answered before is waited for this long
SAY_AFTER = 3.0  # seconds: an outage is logged once it lasts this long, not for a blip


class Reach:
    """One origin's connections: whether it has answered in this run, and since when every new
    connection to it has failed."""

    def __init__(
        self,
        name: str,
        first: float | None = None,
        patience: float | None = None,
        *,
        origin: str = "",
    ):
        self.name = name  # "the API at https://queue.fal.run", for the log
        self.host = urlsplit(origin).netloc or origin  # "queue.fal.run", for `status`
        self.first = FIRST_CONTACT if first is None else first
        self.patience = PATIENCE if patience is None else patience
        self.answered_once = False
        self.failing_since: float | None = None
        self._said = False  # the outage was logged (one past a blip: SAY_AFTER seconds)
        self.waited_since: datetime | None = None  # when the outage the listener knows of began
        self.listener: Callable[[Reach], None] | None = None  # told as waited_since changes

    @property
    def bound(self) -> float:
        """How long connections may fail before the origin is out of reach."""
        return self.patience if self.answered_once else self.first

    def answered(self) -> None:
        """A connection was made: any outage is over."""
        if self._said and self.failing_since is not None:
            waited = time.monotonic() - self.failing_since
            logger.warning("%s answers again, after %.0f s", self.name, waited)
        self.answered_once, self.failing_since, self._said = True, None, False
        self._tell(None)

    def failed(self, started: float) -> float:
        """A connection that began at ``started`` could not be made: the seconds left before
        the origin is out of reach (none left: it is)."""
        if self.failing_since is None:
            self.failing_since = started
        lasted = time.monotonic() - self.failing_since
        if self.waiting and not self._said and lasted >= SAY_AFTER:
            self._said = True
            logger.warning(
                "%s stopped answering %.0f s ago; waiting up to %.0f s for it (jobs in flight "
                "carry on at the provider)",
                self.name,
                lasted,
                self.patience,
            )
        if self._said and self.waiting:
            self._tell(datetime.now(UTC).timestamp() - lasted)
        else:
            self._tell(None)  # out of reach: no longer waited for
        return self.left()

    def _tell(self, began: float | None) -> None:
        """Tell the listener the outage being waited for (it began at ``began``, wall clock),
        or that none is, when that changes."""
        if (began is None) == (self.waited_since is None):
            return
        self.waited_since = None if began is None else datetime.fromtimestamp(began, UTC)
        if self.listener is not None:
            self.listener(self)

    def left(self) -> float:
        """Seconds left before the origin is out of reach, while connections to it fail."""
        if self.failing_since is None:
            return self.bound
        return self.failing_since + self.bound - time.monotonic()

    @property
    def waiting(self) -> bool:
        """Whether a failed connection is an outage being waited for (not a wrong address)."""
        return self.answered_once and self.failing_since is not None and self.left() > 0


class Waits:
    """The origins a run is waiting for now, told to ``record`` as they change: when the
    earliest of their outages began (UTC ISO-8601) and their hosts (``"api.quickrouter.ai"``,
    several joined by ", "), or None and None once none is waited for. Set as the
    :attr:`Reach.listener` of each origin of the run."""

    def __init__(self, record: Callable[[str | None, str | None], None]):
        self._record = record
        # each origin's (the API, each media host: the same host may serve both) outage
        self._since: dict[str, tuple[str, datetime]] = {}  # name -> its host, when it began

    def __call__(self, reach: Reach) -> None:
        if reach.waited_since is None:
            self._since.pop(reach.name, None)
        else:
            self._since[reach.name] = (reach.host, reach.waited_since)
        if not self._since:
            self._record(None, None)
            return
        began = min(since for _, since in self._since.values())
        hosts = sorted({host for host, _ in self._since.values()})
        self._record(began.isoformat(timespec="milliseconds"), ", ".join(hosts))
