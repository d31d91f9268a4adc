"""Which hosts probe which in the fleet mesh (pure: no network, no IMAP library)."""

from __future__ import annotations

from collections.abc import Sequence


def mesh_round(names: Sequence[str], round_no: int) -> list[tuple[str, str]]:
    """The (source, destination) pairs to probe in round ``round_no``.

    N pairs per round (O(N) probes per interval); round r pairs each host i
    with host i + 1 + (r mod (N-1)), so every ordered pair of distinct hosts
    comes up once every N-1 rounds and each host sends and receives one probe
    per round.
    """
    n = len(names)
    if n < 2:
        return []
    offset = 1 + round_no % (n - 1)
    return [(names[i], names[(i + offset) % n]) for i in range(n)]
