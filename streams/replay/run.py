"""One whole ``leadscore replay``, start to end (:func:`run_replay`): load the
conversions, read and apply the sources on the native path (the reference path when
identities are merged), write the outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from schemas.events import LeadEvent
from schemas.validation import MAX_EVENT_BYTES
from scoring import backtest
from scoring.identity import Router
from scoring.rules import RuleSet

from .control import merge_control, read_control
from .conversions import load_conversions
from .errors import ReplayError
from .fast import replay_sources
from .outputs import RunOutputs, write_outputs
from .reading import ReadStats, read_events
from .reference import replay_events
from .results import gc_paused
from .sources import Source

#: Labels of the main rules (A) and of the ``--compare`` rules (B).
LABELS = ("A", "B")


def run_replay(
    sources: Sequence[Source],
    rules: Sequence[tuple[RuleSet, str]],
    out_dir: Path,
    *,
    conversions_path: Path | None = None,
    at_ms: int | None = None,
    cutoff_ms: int | None = None,
    window_ms: int = 7 * 86_400_000,
    max_event_bytes: int = MAX_EVENT_BYTES,
    progress: bool = False,
    control: Sequence[Source] = (),
    merge_identities: bool = False,
    routed: bool = False,
) -> dict[str, Any]:
    """Read, apply, write: the whole ``leadscore replay``. ``rules`` is ``(ruleset, file
    name)``, the first one the main rules, a second one the ``--compare`` rules (its files
    go to ``out_dir/compare/``). ``control``: sources of control events, merged in by
    event time (:mod:`streams.replay.control`). ``merge_identities``: route events to
    their canonical leads first (:mod:`scoring.identity`, step 1), as the worker does.
    ``routed``: the sources are the worker's identity topic (routed already: its identity
    events are applied where they stand). Either runs on the reference apply path (the
    native lead table does not merge leads); without them, identity events are refused
    like a worker without identity merges refuses them.
    Returns the summary (also in ``summary.json``)."""
    started = time.perf_counter()
    conversions = None
    if conversions_path is not None:
        conversions = backtest.index_conversions(load_conversions(conversions_path))
    if cutoff_ms is not None and at_ms is not None and cutoff_ms > at_ms:
        raise ReplayError("--cutoff must not be after --at")
    stats = ReadStats()
    outputs = [
        RunOutputs(LABELS[i], name, out_dir if i == 0 else out_dir / "compare")
        for i, (_, name) in enumerate(rules)
    ]
    with gc_paused():  # millions of acyclic objects: see gc_paused
        control_events = read_control(control, stats, max_event_bytes)
        rulesets = [ruleset for ruleset, _ in rules]
        if not (merge_identities or routed):
            replay = replay_sources(
                sources,
                rulesets,
                stats,
                at_ms=at_ms,
                cutoff_ms=cutoff_ms,
                max_event_bytes=max_event_bytes,
                progress=progress,
                control=control_events,
            )
        else:  # (the native lead table does not merge leads)
            batches = merge_control(
                read_events(
                    sources,
                    stats,
                    max_event_bytes=max_event_bytes,
                    progress=progress,
                    identities=True,
                    routed=routed,
                ),
                control_events,
                at_ms,
            )
            if merge_identities and not routed:
                router = Router()
                batches = (cast(list[LeadEvent], router.route(b)) for b in batches)
            replay = replay_events(
                batches, rulesets, at_ms=at_ms, cutoff_ms=cutoff_ms, routed=routed
            )
        return write_outputs(
            replay,
            stats,
            out_dir,
            outputs,
            sources=[s.name for s in (*sources, *control)],
            conversions=conversions,
            window_ms=window_ms,
            started=started,
        )
