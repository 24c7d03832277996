"""ml_core.typed.build: keys and types checked, errors name the key, the value and the type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from ml_core.typed import ConfigError, build


@dataclass
class Inner:
    k: int = 1


@dataclass
class Outer:
    n: int = 2
    x: float = 0.5
    name: str = "a"
    flag: bool = False
    kind: Literal["ep", "add"] = "ep"
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    maybe: int | None = None
    table: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    free: Any = None


def test_builds_with_defaults_and_converts_int_to_float():
    o = build(Outer, {"x": 1, "sizes": [3], "inner": {"k": 5}, "table": {"a": 2}}, "sec")
    assert o.x == 1.0 and isinstance(o.x, float) and o.sizes == [3] and o.inner == Inner(5) and o.table == {"a": 2.0}
    assert build(Outer, None, "sec") == Outer()


@pytest.mark.parametrize(("values", "message"), [
    ({"n": "2"}, "sec.n = '2' (str): expected int"),
    ({"n": True}, "sec.n = True (bool): expected int"),
    ({"flag": 1}, "sec.flag = 1 (int): expected bool"),
    ({"kind": "mlp"}, "sec.kind = 'mlp': expected one of ['ep', 'add']"),
    ({"sizes": [1, "b"]}, "sec.sizes[1] = 'b' (str): expected int"),
    ({"maybe": 1.5}, "sec.maybe = 1.5 (float): expected int | None"),
    ({"table": {"a": "x"}}, "sec.table.a = 'x' (str): expected float"),
    ({"inner": {"k": 1.0}}, "sec.inner.k = 1.0 (float): expected int"),
    ({"nope": 1}, "unknown key sec.nope"),
])
def test_errors_name_key_value_and_type(values, message):
    with pytest.raises(ConfigError) as e:
        build(Outer, values, "sec")
    assert message in str(e.value)
