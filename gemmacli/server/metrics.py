"""Prometheus metrics, on a registry of the app's own (no process-wide state for tests to reset)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "gemmacli_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.model_requests = Counter(
            "gemmacli_model_requests", "Finished model requests", ["model", "endpoint"], registry=r
        )
        self.ttft = Histogram(
            "gemmacli_time_to_first_token_seconds",
            "Time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "gemmacli_inter_token_latency_seconds",
            "Time between streamed tokens",
            ["model"],
            buckets=TOKEN_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "gemmacli_e2e_request_latency_seconds",
            "End-to-end model request latency",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("gemmacli_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generation_tokens = Counter("gemmacli_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.running = Gauge("gemmacli_requests_running", "Requests running on the inference thread", registry=r)
        self.waiting = Gauge("gemmacli_requests_waiting", "Requests waiting for the inference thread", registry=r)
        self.in_flight = Gauge(
            "gemmacli_http_requests_in_flight", "HTTP requests being answered (streams included)", registry=r
        )
        self.embed_cache_hits = Counter(
            "gemmacli_embed_cache_hits", "Embedding inputs answered from the cache", ["model"], registry=r
        )
        self.embed_cache_misses = Counter(
            "gemmacli_embed_cache_misses", "Embedding inputs sent to the model", ["model"], registry=r
        )
        self.embed_batch_size = Histogram(
            "gemmacli_embed_batch_size", "Texts per embedding model call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )

    def engine_changed(self, running: int, waiting: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)

    def track_in_flight(self, app):
        """ASGI wrapper: counts each HTTP request from its arrival until its last byte (or its cancellation).
        Scrapes of /metrics are left out, so an idle server shows 0."""

        async def handle(scope, receive, send):
            if scope["type"] != "http" or scope["path"] == "/metrics":
                return await app(scope, receive, send)
            with self.in_flight.track_inprogress():
                await app(scope, receive, send)

        return handle

    def render(self) -> bytes:
        return generate_latest(self.registry)
