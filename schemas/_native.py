"""The event decoder's door to the native core (``native/``, Python module
``leadscore_core``).

Only this module (and :mod:`scoring._native` for the engine) imports the core. Its slice:

* :func:`duplicate_key`: the first key repeated within a JSON object, if any
  (``native/src/duplicates.rs``);
* :func:`parse_event_fast`: the serde fast path that accepts only events pydantic would
  certainly accept, with the same values (``native/src/event.rs``); it mirrors
  :mod:`schemas.events` on purpose and ``tests/unit/test_native_parse.py`` holds the two
  equal;
* :class:`Reader` / :class:`Batch`: the bulk reader (replay, and later the worker): parses
  chunks of records on the fast path and groups them by rule-matching signature
  (``native/src/table.rs``).
"""

from __future__ import annotations

from leadscore_core import Batch, Reader, duplicate_key, parse_event_fast

__all__ = ["Batch", "Reader", "duplicate_key", "parse_event_fast"]
