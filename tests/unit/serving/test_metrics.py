"""/metrics: the Prometheus text format of requests, errors, latency, model version and reloads."""

from __future__ import annotations

import re

import pytest

from ml_core.serving.metrics import BUCKETS, Metrics

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


def parse(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of every sample line; every line is a sample or a comment."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert line.split()[1] in ("HELP", "TYPE"), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_histogram_and_counters():
    m = Metrics()
    for seconds in (0.0005, 0.004, 0.004, 3.0, 20.0):
        m.observe("/score", 200, seconds)
    m.observe("/score", 422, 0.001)
    m.observe("/recommend", 503, 0.02)
    m.set_version('v"1')
    m.reloaded(True)
    s = parse(m.render())
    assert s['moge_requests_total{endpoint="/score",status="200"}'] == 5
    assert s['moge_request_errors_total{endpoint="/score",status="422"}'] == 1
    assert s['moge_request_errors_total{endpoint="/recommend",status="503"}'] == 1
    assert 'moge_request_errors_total{endpoint="/score",status="200"}' not in s
    buckets = [s[f'moge_request_duration_seconds_bucket{{endpoint="/score",le="{le}"}}'] for le in
               [*(str(b) for b in BUCKETS), "+Inf"]]
    assert buckets == sorted(buckets) and buckets[-1] == s['moge_request_duration_seconds_count{endpoint="/score"}'] == 6
    assert s['moge_request_duration_seconds_bucket{endpoint="/score",le="0.001"}'] == 2  # 0.5 ms and the 1 ms 422
    assert s['moge_request_duration_seconds_bucket{endpoint="/score",le="10.0"}'] == 5  # all but the 20 s one
    assert s['moge_request_duration_seconds_sum{endpoint="/score"}'] == pytest.approx(0.0005 + 0.008 + 23.0 + 0.001)
    assert s['moge_model_version_info{version="v\\"1"}'] == 1  # label values escaped
    assert s['moge_reloads_total{result="ok"}'] == 1 and s['moge_reloads_total{result="failed"}'] == 0


def test_metrics_endpoint(mmoe, scorer):
    from fastapi.testclient import TestClient

    from ml_core.serving.app import create_app

    with TestClient(create_app(mmoe.serve_root)) as c:
        user, item = int(scorer.graph.user_ids[0]), int(scorer.item_ids[0])
        for _ in range(3):
            assert c.post("/score", json={"pairs": [[user, item]]}).status_code == 200
        assert c.post("/score", json={"pairs": []}).status_code == 422
        assert c.post("/recommend", json={"user_id": user, "k": 2, "candidates": [item]}).status_code == 200
        assert c.get("/no/such/path").status_code == 404
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        s = parse(r.text)
    assert s['moge_requests_total{endpoint="/score",status="200"}'] == 3
    assert s['moge_request_errors_total{endpoint="/score",status="422"}'] == 1
    assert s['moge_requests_total{endpoint="/recommend",status="200"}'] == 1
    assert s['moge_requests_total{endpoint="other",status="404"}'] == 1
    assert s['moge_request_duration_seconds_count{endpoint="/score"}'] == 4
    assert s[f'moge_model_version_info{{version="{mmoe.version}"}}'] == 1
    assert s['moge_reloads_total{result="ok"}'] == 0
    assert s['moge_rejections_total{reason="validation"}'] == 1  # the empty /score
