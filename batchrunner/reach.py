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
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

FIRST_CONTACT = 10.0  # seconds: an origin never reached in this run is out of reach after these
PATIENCE = 300.0  # seconds: one that answered before is waited for this long
SAY_AFTER = 3.0  # seconds: an outage is logged once it lasts this long, not for a blip


class Reach:
    """One origin's connections: whether it has answered in this run, and since when every new
    connection to it has failed."""

    def __init__(self, name: str, first: float | None = None, patience: float | None = None):
        self.name = name  # "the API at https://queue.fal.run", for the log
        self.first = FIRST_CONTACT if first is None else first
        self.patience = PATIENCE if patience is None else patience
        self.answered_once = False
        self.failing_since: float | None = None
        self._said = False  # the outage was logged (one past a blip: SAY_AFTER seconds)

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
        return self.left()

    def left(self) -> float:
        """Seconds left before the origin is out of reach, while connections to it fail."""
        if self.failing_since is None:
            return self.bound
        return self.failing_since + self.bound - time.monotonic()

    @property
    def waiting(self) -> bool:
        """Whether a failed connection is an outage being waited for (not a wrong address)."""
        return self.answered_once and self.failing_since is not None and self.left() > 0
