"""Spool entries waiting to be taken, served round-robin by their owner's uid.

Intake is the one path every user shares: taken in arrival order, one user's 30,000 files (even empty ones)
would keep another user's single file waiting behind them for many seconds. Served a name per owner in turn,
a user's file waits for at most one name of each other user with files waiting. Pure: no I/O here.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class FairQueue:
    def __init__(self) -> None:
        self._by_owner: OrderedDict[int, deque[str]] = OrderedDict()
        self._names: set[str] = set()

    def push(self, owner: int, name: str) -> bool:
        """Queue `name` for `owner`; False if it is queued already."""
        if name in self._names:
            return False
        self._names.add(name)
        self._by_owner.setdefault(owner, deque()).append(name)
        return True

    def pop(self) -> str | None:
        """The next name, the owners taking turns; None when empty."""
        if not self._by_owner:
            return None
        owner, names = next(iter(self._by_owner.items()))
        name = names.popleft()
        if names:
            self._by_owner.move_to_end(owner)
        else:
            del self._by_owner[owner]
        self._names.discard(name)
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)
