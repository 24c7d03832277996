"""Rates and ETAs of ml_core.progress, on a fake clock."""

import pytest

from ml_core.progress import Progress, format_duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (41.6, "42s"), (59.4, "59s"), (60, "1m00s"), (187, "3m07s"),
                                           (3599.4, "59m59s"), (3600, "1h00m"), (7530, "2h05m"), (90061, "25h01m"),
                                           (None, "?"), (-1, "?"), (float("nan"), "?"), (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_reports_every_n_steps_with_the_interval_and_mean_rates():
    clock = FakeClock()
    p = Progress(total=10, every=4, clock=clock)
    assert p.eta_s() is None  # nothing done yet: no estimate
    due = []
    for step in range(1, 11):
        # steps 1-4 take 1 s each (100 samples), steps 5-8 take 2 s each, steps 9-10 take 1 s
        clock.now += 2.0 if 5 <= step <= 8 else 1.0
        if p.advance(100):
            due.append((step, p.recent_rate, p.mean_rate, p.eta_s()))
    assert [d[0] for d in due] == [4, 8]
    step, recent, mean, eta = due[0]
    assert recent == pytest.approx(100.0) and mean == pytest.approx(100.0)  # 400 samples in 4 s
    assert eta == pytest.approx(6 * 1.0)  # 6 steps left at 1 s per step so far
    step, recent, mean, eta = due[1]
    assert recent == pytest.approx(50.0)  # the interval: 400 samples in 8 s
    assert mean == pytest.approx(800 / 12)  # since the start: 800 samples in 12 s
    assert eta == pytest.approx(2 * 12 / 8)  # 2 steps left at 1.5 s per step
    assert p.steps == 10 and p.samples == 1000 and p.eta_s() == 0.0
    assert p.rates() == "50 samples/s (71 since start)"  # the last report's interval, the mean up to now


def test_multi_step_advances_cross_a_multiple_once():
    clock = FakeClock()
    p = Progress(total=0, every=5, clock=clock)
    clock.now += 1
    assert not p.advance(30, steps=3)
    clock.now += 1
    assert p.advance(40, steps=4)  # 3 -> 7 crosses 5
    assert p.recent_rate == pytest.approx(35.0)
    assert not p.advance(10, steps=2)  # 7 -> 9
    assert p.advance(10, steps=1)  # 9 -> 10
    assert p.eta_s() is None  # unknown total
    assert p.eta_s(remaining_steps=5) == pytest.approx(5 * 2 / 10)


def test_every_zero_never_reports_and_negative_is_refused():
    p = Progress(total=3, every=0, clock=FakeClock())
    assert not any(p.advance(1) for _ in range(3))
    with pytest.raises(ValueError, match="every = -1"):
        Progress(total=3, every=-1)
