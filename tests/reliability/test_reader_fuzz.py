"""The CSV reader never guesses: 12,000 generated Taobao-layout lines (valid ones, then random
bytes, control characters, truncations and broken quoting put into some of them), and every
line is either an event equal to what the line says, blank, or quarantined with a reason. An
independent, strict reading of each line (:func:`oracle`) says what it holds; a line it cannot
read must not become an event, and an event must equal its reading."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime

import polars as pl

from ml_core.config import source_config
from ml_core.data.readers import parse_source

N_LINES = 12_000
DAY = date(2017, 11, 26)
T0 = int(datetime(2017, 11, 26, 2, 0, tzinfo=UTC).timestamp())
BEHAVIORS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "buy"}
#: What the strict reading refuses in a line: C0 controls (newline ends lines) and DEL.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,"]*)')
INT = re.compile(r"[+-]?\d+")
#: unix seconds may have a fraction (the reader reads them as floats: ``.5`` is half a second after 1970)
SECONDS = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
#: What the reader takes for a blank line (Rust's ASCII whitespace).
BLANK = set(" \t\n\x0b\x0c\r")


def oracle(line: bytes):
    """``"blank"``, the event ``(user, item, category, behavior, ts in µs)`` the line holds, read
    strictly (fields quoted or not, spaces around values allowed), or None: not a clean row."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.removesuffix("\r")  # a CRLF line end
    if set(text) <= BLANK:
        return "blank"
    if CONTROL.search(text):
        return None
    fields, pos = [], 0
    while True:
        m = FIELD.match(text, pos)
        fields.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] != ",":
            return None  # text after a quoted field, or a quote inside an unquoted one
        pos += 1
    if len(fields) != 5:
        return None
    user, item, cat, beh, ts = (f.strip(" ") for f in fields)
    if not all(INT.fullmatch(v) and -(2**63) <= int(v) < 2**63 for v in (user, item, cat)) or beh not in BEHAVIORS:
        return None
    if not SECONDS.fullmatch(ts) or not abs(float(ts)) <= 253_402_300_799:  # the reader's bound: year 9999
        return None
    us = int(ts) * 1_000_000 if INT.fullmatch(ts) else round(float(ts) * 1_000_000)
    return int(user), int(item), int(cat), BEHAVIORS[beh], us


def valid_line(rng: random.Random) -> str:
    return (f"{rng.randrange(1, 10**6)},{rng.randrange(1, 10**7)},{rng.randrange(1, 10**4)},"
            f"{rng.choice(list(BEHAVIORS))},{T0 + rng.randrange(-86400, 4 * 86400)}")


def mutate(rng: random.Random, line: bytes) -> bytes:
    kind = rng.random()
    pos = rng.randrange(len(line) + 1)
    if kind < 0.3:  # a control character (never a newline: that makes two lines)
        c = rng.choice([b for b in range(32) if b != 10] + [127])
        return line[:pos] + bytes([c]) + line[pos:]
    if kind < 0.5:  # any byte
        return line[:pos] + bytes([rng.choice([b for b in range(256) if b != 10])]) + line[pos:]
    if kind < 0.65:  # truncated
        return line[:pos]
    fields = line.split(b",")
    j = rng.randrange(len(fields))
    if kind < 0.75:  # a quoted field, sometimes with text after it
        fields[j] = b'"' + fields[j] + b'"' + (rng.choice([b"", b"7", b"x"]))
    elif kind < 0.85:  # a stray quote
        return line[:pos] + b'"' + line[pos:]
    else:  # a quoted field with a separator inside, or unterminated
        fields[j] = b'"' + fields[j] + rng.choice([b",", b""])
    return b",".join(fields)


def test_every_row_is_its_source_or_quarantined(tmp_path):
    rng = random.Random(27)
    lines = []
    for _ in range(N_LINES):
        line = valid_line(rng).encode()
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            line = mutate(rng, line)
        lines.append(line)
    path = tmp_path / "fuzz.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = source_config(kind="taobao", path=str(path), start_date=DAY.isoformat(), end_date="2017-11-30",
                        timezone="Asia/Shanghai")
    lf, *_ = parse_source(cfg)
    rows = lf.select("source_row", "cls", "reason", "user_id", "item_id", "category", "behavior",
                     pl.col("ts").dt.epoch("us").alias("ts")).sort("source_row").collect()
    assert rows["source_row"].to_list() == list(range(1, N_LINES + 1))  # one row per line, none split or lost

    altered, counts = [], {"event": 0, "blank": 0, "quarantined": 0, "clean_quarantined": 0}
    for line, r in zip(lines, rows.iter_rows(named=True)):
        want = oracle(line)
        if r["cls"] == "quarantined":
            assert r["reason"], r
            counts["quarantined"] += 1
            counts["clean_quarantined"] += want not in (None, "blank")
        elif r["cls"] == "blank":
            counts["blank"] += 1
            if want != "blank":
                altered.append((line, r))
        else:  # an event, in the range or outside it
            counts["event"] += 1
            got = (r["user_id"], r["item_id"], r["category"], r["behavior"], r["ts"])
            if got != want:
                altered.append((line, r))
    print(f"{N_LINES} lines: {counts}")
    assert counts["event"] > N_LINES // 3 and counts["quarantined"] > N_LINES // 5  # both kinds well exercised
    assert altered == [], f"{len(altered)} silently altered rows, e.g. {altered[:5]}"


def test_the_unit_separator_byte_quarantines_its_line(tmp_path):
    """Issue 27's case: a 0x1F inside a line cut it short, and a buy event read as 1970."""
    ts = str(T0)
    lines = [f"1,100,10,buy,{ts[:3]}\x1f{ts[3:]}", "\x1f2,101,10,pv," + ts, f"3,102,10,pv,{ts}\x1f", f"4,103,10,pv,{ts}"]
    path = tmp_path / "us.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    cfg = source_config(kind="taobao", path=str(path), start_date=DAY.isoformat(), end_date="2017-11-30",
                        timezone="Asia/Shanghai")
    rows = parse_source(cfg)[0].sort("source_row").collect()
    assert rows["cls"].to_list() == ["quarantined"] * 3 + ["in_range"]
    assert all(r.startswith("control character") for r in rows["reason"].to_list()[:3])
