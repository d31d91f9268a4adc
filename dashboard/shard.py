"""Which hosts one ``mailfleet serve --shard K/N`` watches: Prometheus' ``hashmod``, exactly.

Several watchers split a fleet between them the way Prometheus splits the
``/sd`` targets: relabelling with ``action: hashmod`` and ``modulus: N`` on
``__address__`` (the inventory name ``/sd`` lists) gives each target a number
from 0 to N-1, and shard K's jobs keep the targets numbered K. A watcher started
with ``--shard K/N`` sweeps exactly those hosts, so its ``/metrics`` holds every
series of its hosts and none of anyone else's, and its ``/probe`` answers for the
hosts Prometheus sends it.

Prometheus' hash (``model/relabel``): the MD5 of the label value, its last eight
bytes read as a big-endian unsigned 64-bit number, modulo N. The test with a real
Prometheus checks that both sides agree.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 1024  # more watchers than this is a typo, not a fleet


class ShardError(ValueError):
    """A ``--shard`` value that names no shard."""


def hashmod(value: str, modulus: int) -> int:
    """What Prometheus' ``hashmod`` relabel action gives ``value`` for ``modulus``."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, as ``hashmod`` numbers them)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ShardError(f"--shard {self.index}/{self.count}: the number of shards must be "
                             f"from 1 to {MAX_SHARDS}")
        if not 0 <= self.index < self.count:
            raise ShardError(
                f"--shard {self.index}/{self.count}: shards are numbered from 0 to "
                f"{self.count - 1}, as Prometheus' hashmod numbers them (e.g. --shard 0/"
                f"{self.count} ... --shard {self.count - 1}/{self.count})")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"``: this watcher is shard K of N."""
        match = _SHARD.fullmatch(text)
        if match is None:
            raise ShardError(f"--shard wants K/N (this watcher is shard K of N, counted from "
                             f"0: --shard 0/2 and --shard 1/2), not {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def owner(self, name: str) -> int:
        """The shard that watches the host named ``name``."""
        return hashmod(name, self.count)

    def owns(self, name: str) -> bool:
        # One shard owns everything: no hash to work out per host and sweep.
        return self.count == 1 or self.owner(name) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE_FLEET = Shard(0, 1)  # one watcher: every host is its own
