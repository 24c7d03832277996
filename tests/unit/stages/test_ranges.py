"""ml_core.stages.ranges: a range of days run in date order, stopped at the failing day."""

import pytest

from ml_core.stages.ranges import DayFailed, chunks, run_days


def test_run_days_stops_at_the_failing_day_and_names_it():
    seen = []

    def day(d):
        if d == "c":
            raise ValueError("bad")
        seen.append(d)
        return d.upper()

    it = run_days("x", ["b", "a", "c", "d"], day, done={"a"})
    assert next(it) == ("b", "B")  # date order, the done day passed
    with pytest.raises(DayFailed, match=r"x: day c of the range a\.\.d failed \(ValueError: bad\); a\.\.b \(2 days\) "
                                        r"are materialized, a retry resumes from c") as e:
        next(it)
    assert (e.value.day, e.value.done) == ("c", ["a", "b"]) and seen == ["b"]
    assert chunks(["c", "a", "b"], 2) == [["a", "b"], ["c"]] and chunks(["a", "b"], 0) == [["a", "b"]]
