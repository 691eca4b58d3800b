"""How often someone may try a password on the web sign-in (pure: the time is given).

Failures are counted per key (a user name as typed, and a source address: an IPv6 one by its /64, which
one host can fill at will). After `free` failures in a row, each further attempt for that key waits twice
as long after the last failure as the one before (2 s, 4 s, 8 s, ... up to `cap`, 15 min): a person who
mistypes waits a little, a guesser gets a few tries an hour. A key is forgotten `forget` seconds after its
last failure; a success forgets the user name's (not the address's: one good password of one's own must not
reset the count of guesses at others'). Names that don't exist are counted exactly like ones that do, so
the answers never tell which accounts exist.

The table is bounded: at most `size` keys, the least recently failed dropped first. Filling it takes that
many failed attempts, which the daemon runs at most a few at a time (webauth.MAX_RUNNING), each at least
its fail delay long.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class Count:
    failures: int
    last: float


class Limiter:
    def __init__(self, free: int, base: float = 2.0, cap: float = 900.0, forget: float = 3600.0,
                 size: int = 10000):
        self.free, self.base, self.cap, self.forget, self.size = free, base, cap, forget, size
        self._counts: OrderedDict[str, Count] = OrderedDict()

    def delay(self, failures: int) -> float:
        """How long after the last of `failures` failures the next attempt must wait."""
        if failures < self.free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - self.free, 40))

    def wait(self, key: str, now: float) -> float:
        """Seconds before an attempt for `key` may run (0: now)."""
        count = self._counts.get(key)
        if count is None:
            return 0.0
        if now - count.last > self.forget:
            del self._counts[key]
            return 0.0
        return max(0.0, count.last + self.delay(count.failures) - now)

    def failed(self, key: str, now: float) -> None:
        count = self._counts.pop(key, None)
        if count is None or now - count.last > self.forget:
            count = Count(0, now)
        count.failures += 1
        count.last = max(count.last, now)
        self._counts[key] = count                    # the most recent at the end
        while len(self._counts) > self.size:
            self._counts.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._counts.pop(key, None)

    def __len__(self) -> int:
        return len(self._counts)


def source_key(address: str) -> str:
    """The address counted for failures: an IPv4 address itself (an IPv4-mapped IPv6 one as IPv4), an IPv6
    address by its /64 (one machine is given a whole /64 and can change addresses within it at will)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
