"""Prometheus metrics of one worker, in their own registry (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Counters and gauges exposed at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.dead_letters_unwritable = Counter(
            "leadscore_dead_letters_unwritable",
            "Dead letters the broker refused (logged with their position, then skipped)",
            registry=r,
        )
        self.consumed = Counter("leadscore_events_consumed", "Input messages consumed", registry=r)
        self.applied = Counter(
            "leadscore_events_applied", "Events applied to lead scores", registry=r
        )
        self.unscored = Counter(
            "leadscore_events_unscored",
            "Valid events no rule mentions (their type, or a track event's name): applied "
            "as no-ops",
            ["type"],
            registry=r,
        )
        self.duplicates = Counter(
            "leadscore_events_duplicate",
            "Events skipped as already applied (repeated event_id or redelivery)",
            registry=r,
        )
        self.dead_lettered = Counter(
            "leadscore_events_dead_lettered",
            "Input messages sent to the dead-letter topic",
            ["kind"],
            registry=r,
        )
        self.hot = Counter("leadscore_hot_emitted", "lead_became_hot events produced", registry=r)
        self.cooled = Counter("leadscore_cooled_emitted", "lead_cooled events produced", registry=r)
        self.erased = Counter(
            "leadscore_erased_emitted", "lead_erased records produced", registry=r
        )
        self.routed = Counter(
            "leadscore_identity_routed",
            "Input events re-keyed to their canonical lead (identity merges)",
            registry=r,
        )
        self.linked = Counter(
            "leadscore_identity_links", "Links sent (one id joined another)", registry=r
        )
        self.merged = Counter(
            "leadscore_merged_emitted", "lead_merged records produced", registry=r
        )
        self.identity_unwritable = Counter(
            "leadscore_identity_unwritable",
            "Identity-topic records the broker refused for what they are (logged, skipped)",
            registry=r,
        )
        self.forwarded = Counter(
            "leadscore_identity_forwarded",
            "Events of a retired (linked) lead sent on to its canonical lead",
            registry=r,
        )
        self.retries = Counter(
            "leadscore_retries",
            "Retried operations (Redis/Kafka failures)",
            ["operation"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "leadscore_batch_seconds",
            "Time to process one micro-batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "leadscore_consumer_lag",
            "Messages behind the end of each input partition",
            ["topic", "partition"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
