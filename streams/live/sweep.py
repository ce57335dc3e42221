"""How far the worker's cooling sweep may cool a lead now (:func:`sweep_limit`)."""

from __future__ import annotations

from scoring.state import LeadState

from .interfaces import topic_partition_of


def sweep_limit(
    lags: dict[tuple[str, int], int],
    now_ms: int,
    event_time: dict[tuple[str, int], int],
    control_topic: str | None,
    state: LeadState,
) -> int | None:
    """How far the sweep may cool this lead now. Decay alone can only be trusted up to
    the event time its partition has been read to: a worker catching up on a backlog
    (after downtime) must not cool a lead whose older events are still queued, or the
    lead would cool, then re-heat on those events, unlike a replay. So: a caught-up
    partition allows ``now``; a lagging one, the newest event time processed from it;
    a partition of one of our input topics that another worker owns: not this worker's
    call (a control partition owned elsewhere is no reason to hold back)."""
    ours = {topic for topic, _ in lags}
    limit = now_ms
    for stream in state.positions:
        tp = topic_partition_of(stream)
        if tp is None or tp[0] not in ours:
            continue  # a topic no longer consumed: no events will come from it
        if tp not in lags:
            if tp[0] == control_topic:
                continue  # its control partition is another worker's: rare, by hand
            return None
        if lags[tp] > 0:
            limit = min(limit, event_time.get(tp, -1))
            if limit < 0:
                return None  # lagging and nothing read from it yet
    return limit
