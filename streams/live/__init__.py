"""The live worker: Kafka input topic(s) -> scored leads in Redis -> ``lead_became_hot`` /
``lead_cooled`` on the hot-lead topic.

For one micro-batch of raw messages (:meth:`processor.Processor.process`): validate each
message and produce the rejects as dead letters (acked); apply the valid events through
the store, which writes each changed lead's state, applied event ids and new crossings
(the outbox) in one atomic compare-and-set; produce the crossings (acked); drop them from
the outbox; only then does Faust ack the batch's offsets. A timer runs the cooling sweep
(leads that decayed below ``cool`` without events). docs/architecture.md has the
guarantees.

Start order (:func:`app.build_app`, then Faust): settings -> rules -> Redis store -> Faust
app -> sink (the app's producer) -> processor -> agent, sweep timer and web pages; once
Faust runs: outbox relay (crossings a crash left behind) -> consume.

Modules: ``interfaces`` (what the processor programs against), ``processor`` (batch
logic), ``redis_store`` with ``redis_keys`` and ``redis_scripts`` (the store), ``metrics``,
``app`` (Faust), ``commands`` (the worker-side commands).
"""
