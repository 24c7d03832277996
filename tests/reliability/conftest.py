"""The fault-injection table: every scenario of tests/reliability/test_fault_*.py records its
figures (``record_property("fault", ...)``, :func:`tests.reliability.faults.report`); the run's
summary prints them as one table, the one docs/history.md's "Fault injection, one run" shows."""

from __future__ import annotations

import pytest

from tests.reliability.faults import first_model_day, promote_by_hand, run_flow_here, write_config


def _recorded(terminalreporter, name: str) -> list:
    return [value for reports in terminalreporter.stats.values() for rep in reports
            if getattr(rep, "when", None) == "call" for key, value in getattr(rep, "user_properties", ())
            if key == name]


def pytest_terminal_summary(terminalreporter):
    for hostile in _recorded(terminalreporter, "hostile"):  # tests/reliability/test_hostile_requests.py
        terminalreporter.write_sep("-", "hostile requests against moge serve: answers, /health during each")
        terminalreporter.write_line(f"{'probe':48s} {'status':>10s} {'seconds':>8s} {'/health max':>12s} "
                                    f"{'client late':>12s}")
        for r in hostile["rows"]:
            terminalreporter.write_line(f"{r['probe']:48s} {r['status']!s:>10s} {r['seconds']:8.2f} "
                                        f"{r['health_max_ms']:9.1f} ms {r['client_starved_ms']:9.1f} ms")
        terminalreporter.write_line(", ".join(f"{k} {v}" for k, v in hostile["summary"].items()))
    rows = _recorded(terminalreporter, "fault")
    if not rows:
        return
    terminalreporter.write_sep("-", "fault injection: runs failed / recovered, data lost, wrong models served")
    terminalreporter.write_line(f"{'scenario':58s} failed recovered lost wrong  detection")
    for r in rows:
        det = "-" if r["detection_s"] is None else f"{r['detection_s']:.2f} s"
        terminalreporter.write_line(f"{r['scenario']:58s} {r['runs_failed']:6d} {r['runs_recovered']:9d} "
                                    f"{r['data_lost']:4d} {r['wrong_models_served']:5d}  {det} ({r['detected_by']})")


@pytest.fixture(scope="session")
def flow(tmp_path_factory):
    """A flow run by the run command (in this process) through the first model day D and D+1,
    with D's model promoted by hand (:func:`promote_by_hand`), shared read-only by the
    fault-injection tests (each copies it): (its base directory, D)."""
    base = tmp_path_factory.mktemp("flow")
    start, day, n_days = first_model_day(write_config(base))
    rc, _, _ = run_flow_here(base, start, n_days + 1)  # and the day after: a candidate that is not production
    assert rc == 0
    promote_by_hand(base / "data", day)
    return base, day
