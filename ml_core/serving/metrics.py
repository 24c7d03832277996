"""The server's metrics in the Prometheus text exposition format (version 0.0.4), at ``/metrics``.

Written here rather than with ``prometheus_client``: six families, one lock, no global
registry (each app has its own, so two apps in one process, as in the tests, never mix counts)::

    moge_requests_total{endpoint, status}          counter: requests answered, by route and HTTP status
    moge_request_errors_total{endpoint, status}    counter: the answered requests with status >= 400
    moge_request_duration_seconds{endpoint}        histogram: time from request to response
    moge_model_version_info{version}               gauge: 1 for the version being served
    moge_reloads_total{result}                     counter: model swaps (result "ok") and failed loads ("failed")
    moge_rejections_total{reason}                  counter: requests refused before their work, by reason
                                                   (:mod:`ml_core.serving.guard`: body_too_large, body_timeout,
                                                   overloaded, timeout, host, invalid_json, non_finite, validation,
                                                   unauthorized, cross_origin, admin_disabled, ...)

``endpoint`` is the route's path (``/score``); paths no route serves count under ``other``, so
a scan of random URLs cannot grow the label set.
"""

from __future__ import annotations

import bisect
import threading
import time

#: Latency buckets (seconds): 1 ms .. 10 s, dense around the serving targets (10 ms, 30 ms)
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**kv: str) -> str:
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in kv.items())
    return "{" + body + "}"


class Metrics:
    """Thread-safe request, latency, model-version and reload metrics of one app."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._hist: dict[str, list[int]] = {}  # endpoint -> per-bucket counts (+Inf last)
        self._sum: dict[str, float] = {}
        self._version = ""
        self._version_since = 0.0
        self._reloads = {"ok": 0, "failed": 0}
        self._rejections: dict[str, int] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            key = (endpoint, int(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            counts = self._hist.setdefault(endpoint, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self._sum[endpoint] = self._sum.get(endpoint, 0.0) + seconds

    def set_version(self, version: str) -> None:
        with self._lock:
            self._version, self._version_since = version, time.time()

    def reloaded(self, ok: bool) -> None:
        with self._lock:
            self._reloads["ok" if ok else "failed"] += 1

    def rejected(self, reason: str) -> None:
        """Count one request refused for ``reason`` (a fixed word of the server's, never the input)."""
        with self._lock:
            self._rejections[reason] = self._rejections.get(reason, 0) + 1

    def render(self) -> str:
        """The exposition text."""
        with self._lock:
            out = ["# HELP moge_requests_total Requests answered, by endpoint and HTTP status.",
                   "# TYPE moge_requests_total counter"]
            out += [f"moge_requests_total{_labels(endpoint=e, status=s)} {n}" for (e, s), n in sorted(self._requests.items())]
            out += ["# HELP moge_request_errors_total Requests answered with an HTTP status >= 400.",
                    "# TYPE moge_request_errors_total counter"]
            out += [f"moge_request_errors_total{_labels(endpoint=e, status=s)} {n}"
                    for (e, s), n in sorted(self._requests.items()) if s >= 400]
            out += ["# HELP moge_request_duration_seconds Time from request to response.",
                    "# TYPE moge_request_duration_seconds histogram"]
            for e, counts in sorted(self._hist.items()):
                cum = 0
                for le, c in zip([*(repr(float(b)) for b in self.buckets), "+Inf"], counts):
                    cum += c
                    out.append(f"moge_request_duration_seconds_bucket{_labels(endpoint=e, le=le)} {cum}")
                out.append(f"moge_request_duration_seconds_sum{_labels(endpoint=e)} {self._sum[e]!r}")
                out.append(f"moge_request_duration_seconds_count{_labels(endpoint=e)} {cum}")
            out += ["# HELP moge_model_version_info The model version being served (value 1).",
                    "# TYPE moge_model_version_info gauge"]
            if self._version:
                out.append(f"moge_model_version_info{_labels(version=self._version)} 1")
            out += ["# HELP moge_model_loaded_timestamp_seconds When the version being served was loaded (Unix time).",
                    "# TYPE moge_model_loaded_timestamp_seconds gauge",
                    f"moge_model_loaded_timestamp_seconds {self._version_since!r}",
                    "# HELP moge_reloads_total Model swaps (ok) and failed loads of a new version (failed).",
                    "# TYPE moge_reloads_total counter"]
            out += [f"moge_reloads_total{_labels(result=r)} {n}" for r, n in sorted(self._reloads.items())]
            out += ["# HELP moge_rejections_total Requests refused before their work, by reason.",
                    "# TYPE moge_rejections_total counter"]
            out += [f"moge_rejections_total{_labels(reason=r)} {n}" for r, n in sorted(self._rejections.items())]
        return "\n".join(out) + "\n"
