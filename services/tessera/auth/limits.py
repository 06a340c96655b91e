"""Failed-login backoff: pure rules over failure counts (the counts live in Redis, ``store.py``).

Three scopes, each with its own :class:`Backoff` (docs/AUTH.md, "Failed logins"):

- a username (existing or not): past the threshold it is locked, doubling per
  further failure up to a cap; a successful login clears it;
- a client address: never locked; past the threshold each login from it waits,
  so players behind one NAT or proxy are slowed, never refused;
- a service client id: counted apart from players; the lock refuses wrong
  secrets only, so nobody can lock a service out.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2**64 times any positive base is past every cap; a bounded exponent keeps floats finite.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class Backoff:
    """``threshold`` failures start a wait of ``base_s``; each further one doubles
    it, up to ``cap_s``."""

    threshold: int
    base_s: float
    cap_s: float

    def wait_s(self, failures: int) -> float:
        """The wait that ``failures`` failures earn (0 below the threshold)."""
        if failures < self.threshold:
            return 0.0
        exponent = min(failures - self.threshold, _MAX_EXPONENT)
        return min(self.base_s * 2.0**exponent, self.cap_s)

    def starts(self, failures: int) -> bool:
        """Whether the failure that brought the count to ``failures`` started the backoff."""
        return failures == self.threshold

    def schedule_ms(self) -> list[int]:
        """The waits (ms) of failures ``threshold``, ``threshold + 1``, ... up to the
        first at the cap, which holds for every later one: the table the Redis
        script (``store.py``) looks a lock up in, so the rule lives here only."""
        out = []
        for extra in range(_MAX_EXPONENT + 1):
            wait = self.wait_s(self.threshold + extra)
            out.append(round(wait * 1000))
            if wait >= self.cap_s:
                break
        return out
