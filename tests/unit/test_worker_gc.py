"""The worker process's garbage-collector tuning (:func:`streams.live.app.freeze_startup_heap`)."""

from __future__ import annotations

import gc

from streams.live.app import GC_GEN0_THRESHOLD, freeze_startup_heap


def test_the_startup_heap_is_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        # (this test process holds tens of thousands of objects: pytest, the app's modules)
        assert gc.get_freeze_count() > frozen_before + 10_000
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *before[1:])
        assert gc.isenabled()  # tuned, never switched off: cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
