"""Replay: stored event logs (JSONL files, ``.gz`` too, or a Kafka topic range) through the
live worker's scoring code, offline, with a backtest against known conversions.

A ``leadscore replay`` run, start to end (:func:`streams.replay.run.run_replay`):

1. **sources** (``sources.py``): each argument becomes a :class:`FileSource` (lines cut
   by :mod:`streams.jsonl`) or a :class:`KafkaSource`, read in chunks of raw records;
2. **conversions** (``conversions.py``): the ``--conversions`` file, if any, is loaded
   first, so that a bad one stops the run before the long part;
3. **read + apply** (``fast.py``, on ``reading.py``): every record is validated exactly
   like the worker validates it (bad ones are counted and listed like dead letters), and
   the valid events are applied in read order to one native lead table per rules file
   (:class:`scoring._native.LeadTable`, running the engine's own per-event code in the
   native core, not :class:`~scoring.store.MemoryStore`); then the coolings
   due at the end time are emitted. The result is a :class:`Replay` of :class:`RuleRun` s
   (``results.py``);
4. **write** (``outputs.py``): ``hot.jsonl``, ``scores.csv``, metrics, ``status_diff.csv``
   and ``summary.json``; ``report.py`` + ``charts.py`` render ``report.html`` from the
   summary and plain per-run series.

``reference.py`` is the other apply path: pydantic events through
:class:`scoring.store.MemoryStore`, slower; the tests hold the native path equal to it,
and ``leadscore calibrate`` uses it. ``commands.py`` holds the click
commands ``replay`` and ``calibrate`` (what they print: ``console.py``); ``errors.py``
the :class:`ReplayError` they turn into messages.

No module imports one listed after it: errors, sources, reading, results, reference, fast,
conversions, charts, report, outputs, run, console, commands. The report and its charts
get plain data (the summary dict, :class:`ReportRun`) and know nothing of the apply paths.
"""
