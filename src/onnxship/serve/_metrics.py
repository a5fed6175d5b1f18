"""Prometheus text exposition for the server (no client library: a handful of counters and histograms).

Everything is updated from the event loop thread only, so plain ints are enough. With several worker processes
each keeps its own counters; :meth:`Metrics.snapshot` and :meth:`Metrics.merge` sum them for ``/metrics``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Any

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        i = bisect_left(self.buckets, value)  # the first bucket with value <= bound
        if i < len(self.counts):
            self.counts[i] += 1

    def snapshot(self) -> list[Any]:
        return [list(self.counts), self.total, self.sum]

    def add(self, snap: list[Any]) -> None:
        counts, total, total_sum = snap
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.total += total
        self.sum += total_sum

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, acc = [], 0
        for b, c in zip(self.buckets, self.counts, strict=True):
            acc += c
            lines.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {acc}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        lab = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{lab} {self.sum:.6f}")
        lines.append(f"{name}_count{lab} {self.total}")
        return lines


class Metrics:
    """Request, batch and reload counters of one server."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(
            int
        )  # (model, endpoint, status) -> count
        self.latency: dict[str, _Histogram] = {}
        self.batch_rows = _Histogram(_BATCH_BUCKETS)
        self.batch_requests = _Histogram(_BATCH_BUCKETS)
        self.inference_seconds = _Histogram(_LATENCY_BUCKETS)
        self.reloads: dict[str, int] = defaultdict(int)  # outcome -> count
        self.inflight = 0

    def snapshot(self) -> dict[str, Any]:
        """Plain data (picklable) of every counter, for summing across worker processes."""
        return {
            "requests": [[m, e, st, n] for (m, e, st), n in self.requests.items()],
            "latency": {e: h.snapshot() for e, h in self.latency.items()},
            "batch_rows": self.batch_rows.snapshot(),
            "batch_requests": self.batch_requests.snapshot(),
            "inference_seconds": self.inference_seconds.snapshot(),
            "reloads": dict(self.reloads),
            "inflight": self.inflight,
        }

    @classmethod
    def merge(cls, snapshots: list[dict[str, Any]]) -> Metrics:
        """One Metrics holding the sums of ``snapshots``."""
        out = cls()
        for snap in snapshots:
            for m, e, st, n in snap["requests"]:
                out.requests[(m, e, st)] += n
            for e, h in snap["latency"].items():
                out.latency.setdefault(e, _Histogram(_LATENCY_BUCKETS)).add(h)
            out.batch_rows.add(snap["batch_rows"])
            out.batch_requests.add(snap["batch_requests"])
            out.inference_seconds.add(snap["inference_seconds"])
            for outcome, n in snap["reloads"].items():
                out.reloads[outcome] += n
            out.inflight += snap["inflight"]
        return out

    def request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(model, endpoint, status)] += 1
        hist = self.latency.get(endpoint)
        if hist is None:
            hist = self.latency[endpoint] = _Histogram(_LATENCY_BUCKETS)
        hist.observe(seconds)

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.inference_seconds.observe(seconds)

    def render(self, model_name: str | None, model_version: int, ready: bool) -> str:
        out = [
            "# HELP onnxship_requests_total HTTP requests by model, endpoint and status.",
            "# TYPE onnxship_requests_total counter",
        ]
        for (model, endpoint, status), n in sorted(self.requests.items()):
            out.append(
                f'onnxship_requests_total{{model="{_esc(model)}",endpoint="{endpoint}",code="{status}"}} {n}'
            )
        out += [
            "# HELP onnxship_request_duration_seconds Request latency inside the server.",
            "# TYPE onnxship_request_duration_seconds histogram",
        ]
        for endpoint, hist in sorted(self.latency.items()):
            out += hist.render("onnxship_request_duration_seconds", f'endpoint="{endpoint}"')
        out += [
            "# HELP onnxship_batch_rows Rows per model run (dynamic batching).",
            "# TYPE onnxship_batch_rows histogram",
            *self.batch_rows.render("onnxship_batch_rows"),
            "# HELP onnxship_batch_requests Requests merged per model run.",
            "# TYPE onnxship_batch_requests histogram",
            *self.batch_requests.render("onnxship_batch_requests"),
            "# HELP onnxship_inference_seconds Time of one model run.",
            "# TYPE onnxship_inference_seconds histogram",
            *self.inference_seconds.render("onnxship_inference_seconds"),
            "# HELP onnxship_reloads_total Reload attempts by outcome.",
            "# TYPE onnxship_reloads_total counter",
        ]
        for outcome, n in sorted(self.reloads.items()):
            out.append(f'onnxship_reloads_total{{outcome="{outcome}"}} {n}')
        out += [
            "# HELP onnxship_model_version Version number of the model being served (bumped by each reload).",
            "# TYPE onnxship_model_version gauge",
            f'onnxship_model_version{{model="{_esc(model_name or "")}"}} {model_version}',
            "# HELP onnxship_ready 1 when a golden-checked model is serving.",
            "# TYPE onnxship_ready gauge",
            f"onnxship_ready {int(ready)}",
            "# HELP onnxship_inflight_requests Infer requests being handled.",
            "# TYPE onnxship_inflight_requests gauge",
            f"onnxship_inflight_requests {self.inflight}",
        ]
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
