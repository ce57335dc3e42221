"""The live store's name dictionary in Redis (``P names``: rule ids, streams and profile
fields -> the small numbers states use, :class:`streams.live.state_format.Names`).

On a Redis Cluster the dictionary lives on one master, and states on the others use its
numbers: if that master alone rolled back, its dictionary could lose numbers still in use
elsewhere, and give them again. So every master keeps a copy (``P names:{nK}``), written
before any state there uses a new number (a node that rolls back loses the copy and those
states together); reading the dictionary puts back what the copies hold and it lost, and a
new number is given above every number any copy holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .redis_keys import KeySpace
from .redis_nodes import ClusterNodes, StandaloneNodes
from .redis_scripts import merge_names, register_names

log = logging.getLogger("leadscore.store")


class NameDictionaryError(RuntimeError):
    """Two numbers for one name: the dictionary cannot be repaired automatically."""


async def read_names(
    client: Any, keys: KeySpace, nodes: StandaloneNodes | ClusterNodes
) -> dict[str, int]:
    """The whole dictionary, with what a rollback of its node lost put back."""
    raw = await client.hgetall(keys.names)
    numbers = {k.decode(): int(v) for k, v in raw.items() if not k.startswith(b"#")}
    lost = {
        name: number
        for copy in await nodes.name_copies()
        for name, number in copy.items()
        if name not in numbers
    }
    if lost:
        log.error("the name dictionary lost %d name(s); restored from the nodes", len(lost))
        if clash := await merge_names(client, keys.names, lost):
            raise NameDictionaryError(f"the name dictionary has clashing numbers: {clash}")
        numbers.update(lost)
    return numbers


async def give_numbers(
    client: Any, keys: KeySpace, nodes: StandaloneNodes | ClusterNodes, names: Sequence[str]
) -> dict[str, int]:
    """Numbers for ``names`` (kept where another worker gave them already), copied to
    every node before anything uses them."""
    copies = await nodes.name_copies()
    floor = max((n for copy in copies for n in copy.values()), default=0)
    numbers = await register_names(client, keys.names, names, floor)
    await nodes.copy_names(numbers)
    return numbers
