"""Prometheus metrics, in a registry of the service's own (so tests can run many services)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "parley_events",
            "Events received, by platform and outcome",
            ["platform", "outcome"],
            registry=r,
        )
        self.errors = Counter("parley_errors", "Errors, by kind", ["kind"], registry=r)
        self.denied = Counter(
            "parley_denied", "Events the policy refused, by reason", ["reason"], registry=r
        )
        self.tokens = Counter("parley_tokens_generated", "Tokens the model generated", registry=r)
        self.claims_dropped = Counter(
            "parley_claims_dropped",
            "Sentences of the model's answers dropped by the claim check",
            registry=r,
        )
        self.first_token = Histogram(
            "parley_time_to_first_token_seconds",
            "From taking a message up to the first text of its answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reply_latency = Histogram(
            "parley_reply_seconds",
            "From taking a message up to its finished answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.drafts = Counter(
            "parley_drafts",
            "Answers for staff: shadow, pending, and what staff made of them",
            ["state"],
            registry=r,
        )
        self.draft_decision = Histogram(
            "parley_draft_decision_seconds",
            "From a draft's posting for review to staff's decision",
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.claims = Counter(
            "parley_handoffs_claimed", "Handed-off conversations staff took", registry=r
        )
        self.queue_depth = Gauge(
            "parley_queue_depth", "Messages waiting or being answered", registry=r
        )
        self.batch_size = Gauge("parley_batch_size", "Replies the model is writing now", registry=r)

    def watch(self, queue_depth: Callable[[], float], batch_size: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.batch_size.set_function(batch_size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
