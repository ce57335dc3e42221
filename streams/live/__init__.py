"""The live worker: Kafka input topic(s) and the control topic -> scored leads in Redis ->
``lead_became_hot`` / ``lead_cooled`` / ``lead_erased`` on the hot-lead topic.

For one batch of raw messages (consumed by :class:`consumer.BatchConsumer`, handed to
:meth:`processor.Processor.process`): validate each message and produce the rejects as dead
letters (acked); apply the valid events through the store, which writes each changed
lead's state (dedupe window included) and new crossings (the outbox) in one atomic
compare-and-set; produce the crossings (acked); drop them from the outbox; only then does
the consumer commit the batch's offsets. A timer runs the cooling sweep
(leads that decayed below ``cool`` without events). docs/architecture.md has the
guarantees.

Start order (:func:`app.run_worker`): topics (created if missing) -> settings -> rules ->
Redis store -> Faust app -> batch consumer -> sink (the app's producer) -> processor ->
consume task, sweep timer and web pages; once Faust runs: store prepared (an older
storage format converted) -> outbox relay (crossings a crash left behind) -> consume.
Stop order: the consumer (batch in flight finished and committed, group left) -> Faust's
producer and web server.

Modules: ``interfaces`` (what the processor programs against), ``consumer`` (the input,
in batches), ``processor`` (batch logic), ``redis_store`` with ``redis_keys``,
``redis_scripts``, ``state_format``, ``redis_migrate`` and ``redis_errors`` (the store),
``metrics``, ``app`` (Faust), ``commands`` (the worker-side commands), ``control_commands``
(``adjust``, ``reset``, ``erase``: control events to the control topic), ``supervisor``
(``worker --processes N``).
"""
