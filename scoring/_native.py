"""The engine's door to the native core (``native/``, Python module ``leadscore_core``).

Only this module (and :mod:`schemas._native` for the event decoder) imports the core;
everything else in leadscore calls the Python APIs of :mod:`scoring`. What is re-exported
here is the engine's slice of the core:

* :class:`Kernel`: the hot/cool state machine of one rules file (``native/src/engine.rs``);
* :class:`Curve`: a lead's score as a function of time, with the exact first-crossing search
  (``native/src/decay.rs``);
* :class:`LeadTable` / :class:`LeadSnapshot`: lead states kept natively for bulk replay
  (``native/src/table.rs``);
* :func:`id_hash`: how a lead's dedupe window remembers an event id;
  :func:`pack_dedupe_window` / :func:`unpack_dedupe_window`: the window as stored;
* :func:`decay_to`, :func:`pow2` and :data:`REBASE_AFTER_HALF_LIVES`: the decay
  arithmetic's primitives.
"""

from __future__ import annotations

from leadscore_core import (
    REBASE_AFTER_HALF_LIVES,
    TOP_REASONS,
    Curve,
    Kernel,
    LeadSnapshot,
    LeadTable,
    decay_to,
    id_hash,
    pack_dedupe_window,
    pow2,
    unpack_dedupe_window,
)

__all__ = [
    "REBASE_AFTER_HALF_LIVES",
    "TOP_REASONS",
    "Curve",
    "Kernel",
    "LeadSnapshot",
    "LeadTable",
    "decay_to",
    "id_hash",
    "pack_dedupe_window",
    "pow2",
    "unpack_dedupe_window",
]
