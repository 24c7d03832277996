"""Hostile and worst-case requests against one real ``moge serve`` process (started once for the
module, on 127.0.0.1, over a copy of the serving tests' production bundle).

Each probe sends one bad or hostile input (issue 27's list: a 10M-id body, 100 MB fields, NaN
and Infinity, slow clients, eight maximum-size requests at once, a cross-origin ``/reload``, a
forged ``Host``, a pointer that escapes the store, ...) and checks the answer it must get. While
it runs, a second client asks ``/health`` every 10 ms: it must answer each within
:data:`HEALTH_LIMIT_S`. At the end the server must still run, have answered no unexpected 5xx,
and its resident memory must be within 1.5x of what it was before the first probe. The figures
(probes, crashes, stalls, 5xx) are printed as one table at the end of the run (conftest.py) and
are the table of docs/history.md's "Hostile requests, one run".
"""

from __future__ import annotations

import dataclasses
import json
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ml_core.registry.bundles import BundleStore
from ml_core.serving.guard import Limits
from ml_core.serving.requests import MAX_PAIRS

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hostile-suite-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
#: the server's limits here: the defaults, with short timeouts so the slow-client probes are quick
BODY_TIMEOUT_S = HEADER_TIMEOUT_S = 2.0
MAX_CONCURRENT = 2
#: /health must answer within HEALTH_LIMIT_S during every probe (issue 27's target; slower counts
#: as a stall in the figures), unless the machine itself was too busy to tell: when the /health
#: client's own 10 ms sleeps overran by more than STARVED_S during the probe (other processes
#: held the cores: on the shared 2-core machine at load averages of 7-8, CPU starvation alone
#: delayed a thread by up to 0.9 s), only FROZEN_S is asserted (the server, not the load, froze:
#: before the limits a 10M-id body held /health for 13.4 s).
HEALTH_LIMIT_S, FROZEN_S, STARVED_S = 0.1, 1.5, 0.03
MAX_BODY = Limits().max_body_bytes
UNKNOWN = 10**15


@dataclasses.dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    root: Path
    version: str
    rss_before: int = 0
    figures: list = dataclasses.field(default_factory=list)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def server(served_deployments, tmp_path_factory):
    dep = served_deployments("mmoe")
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(dep.serve_root / "registry", root / "registry")
    (root / "admin-token").write_text(TOKEN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ml_core.cli", "serve", "--root", str(root), "--port", str(port), "--threads", "1",
           "--admin-token-file", str(root / "admin-token"), "--max-concurrent", str(MAX_CONCURRENT),
           "--body-timeout", str(BODY_TIMEOUT_S), "--header-timeout", str(HEADER_TIMEOUT_S), "--log-level", "warning"]
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "moge serve did not start within 120 s"
        time.sleep(0.2)
    srv = Server(url, port, proc, root, dep.version)
    with httpx.Client(base_url=url, timeout=10) as c:  # warm: the first requests allocate what later ones reuse
        for _ in range(3):
            c.post("/score", json={"pairs": [[1, 2]] * 1000})
    srv.rss_before = rss_bytes(proc.pid)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


#: The /health client: a process of its own, so that building a probe's body in this one (the
#: interpreter lock) never delays it. Each line on its stdin answers with the figures since the last.
WATCHER = """
import json, select, sys, time
import httpx
worst, failed, n, late = 0.0, 0, 0, 0.0
with httpx.Client(base_url=sys.argv[1], timeout=5) as c:
    while True:
        t0 = time.perf_counter()
        if select.select([sys.stdin], [], [], 0.01)[0]:
            if not sys.stdin.readline():
                break
            print(json.dumps({"max_s": worst, "failed": failed, "n": n, "starved_s": late}), flush=True)
            worst, failed, n, late = 0.0, 0, 0, 0.0
            continue
        late = max(late, time.perf_counter() - t0 - 0.01)  # how late this process got the core back
        t0 = time.perf_counter()
        try:
            ok = c.get("/health").status_code == 200
        except httpx.HTTPError:
            ok = False
        worst, failed, n = max(worst, time.perf_counter() - t0), failed + (not ok), n + 1
"""


@pytest.fixture(scope="module")
def watcher(server):
    proc = subprocess.Popen([sys.executable, "-c", WATCHER, server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=10)


@contextmanager
def health_watch(watcher: subprocess.Popen):
    """/health asked every 10 ms while the block runs; yields a dict that gets ``max_s`` (the
    slowest answer), ``failed`` (answers other than 200, or none within 5 s), ``n`` and
    ``starved_s`` (the most the client's own 10 ms waits overran: the machine's load)."""
    def mark() -> dict:
        watcher.stdin.write("\n")
        watcher.stdin.flush()
        return json.loads(watcher.stdout.readline())

    mark()
    out: dict = {}
    try:
        yield out
    finally:
        out.update(mark())


# -- raw HTTP: bodies that must be refused before they are sent ---------------------------------------
@dataclasses.dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data[:200]!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split()[1]), headers, body)


def raw(port: int, head: str, chunks: list[bytes] = (), timeout: float = 15) -> Answer:
    """Send ``head`` and then ``chunks`` one by one, stopping as soon as the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1"))
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break
            s.sendall(chunk)
        return read_answer(s)


def declared(path: str, length: int, extra: str = "") -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n")


def chunked_over_limit(port: int) -> Answer:
    """A chunked /score body (no Content-Length) one byte over the limit, in 256 KiB chunks."""
    head = "POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece, left, chunks = 256 << 10, MAX_BODY + 1, []
    while left > 0:
        n = min(piece, left)
        chunks.append(f"{n:x}\r\n".encode() + b"1" * n + b"\r\n")
        left -= n
    return raw(port, head, chunks)


def slow_body(port: int) -> Answer:
    """A declared 1,000-byte body of which 10 bytes arrive."""
    return raw(port, declared("/score", 1000), [b'{"pairs": '])


def slow_head(port: int) -> Answer:
    """A request head sent one header line every 0.5 s, never finished: the server must close
    the connection once HEADER_TIMEOUT_S has passed (answered as status 0, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 10) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        for n in range(int(4 * (HEADER_TIMEOUT_S + 4))):
            try:
                s.sendall(f"X-Slow-{n}: 1\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return Answer(0, {"closed_after_s": time.monotonic() - t0}, b"")
            if select.select([s], [], [], 0.5)[0]:
                try:
                    got = s.recv(65536)
                except ConnectionResetError:
                    got = b""
                if not got:
                    return Answer(0, {"closed_after_s": time.monotonic() - t0}, b"")
        return Answer(-1, {}, b"still open")


def concurrent_max_size(url: str, n: int = 8) -> list[httpx.Response]:
    """``n`` maximum-size /score requests (MAX_PAIRS unknown pairs each) at once."""
    body = json.dumps({"user_ids": [UNKNOWN + j for j in range(MAX_PAIRS)],
                       "item_ids": [UNKNOWN + j for j in range(MAX_PAIRS)]})
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def one(j: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            barrier.wait()
            out[j] = c.post("/score", content=body, headers={"content-type": "application/json"})

    threads = [threading.Thread(target=one, args=(j,)) for j in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return out


# -- the probes ---------------------------------------------------------------------------------------
def post(srv: Server, path: str, body, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return c.post(path, content=content, headers={"content-type": "application/json", **(headers or {})})


def get(srv: Server, path: str, headers: dict | None = None) -> httpx.Response:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return c.get(path, headers=headers or {})


@contextmanager
def pointer(srv: Server, text: str):
    """production.json replaced by ``text`` for the block, then put back."""
    p = BundleStore(srv.root).pointer_path
    good = p.read_text()
    p.write_text(text)
    try:
        yield
    finally:
        p.write_text(good)


def reload_with_pointer(srv: Server, text: str) -> httpx.Response:
    with pointer(srv, text):
        return post(srv, "/reload", b"", ADMIN)


def renamed_copy(srv: Server) -> httpx.Response:
    store = BundleStore(srv.root)
    copy = "2026-01-03-ffffffffff"
    shutil.copytree(store.version_dir(srv.version), store.version_dir(copy))
    try:
        return reload_with_pointer(srv, json.dumps({"version": copy, "partition": srv.version[:10]}))
    finally:
        shutil.rmtree(store.version_dir(copy))


def short(limit: int = 2000) -> Callable:
    def check(r, srv) -> None:
        assert len(r.content) < limit, f"{len(r.content)} bytes answered: the input was echoed"
    return check


def reason_detail(word: str) -> Callable:
    def check(r, srv) -> None:
        assert word in json.dumps(r.json()["detail"]), r.text[:500]
        short()(r, srv)
    return check


def still_serving(r, srv) -> None:
    assert get(srv, "/health").json()["version"] == srv.version


#: (name, what it does, expected status, an extra check of the answer or None)
PROBES = [
    ("score: 10M ids declared (80 MB)", lambda s: raw(s.port, declared("/score", 80_000_002)), 413, None),
    ("score: 100 MB extra field declared", lambda s: raw(s.port, declared("/score", 100 << 20)), 413, None),
    ("recommend: 100 MB task declared", lambda s: raw(s.port, declared("/recommend", 100 << 20)), 413, None),
    ("score: chunked body 1 byte over the limit", lambda s: chunked_over_limit(s.port), 413, None),
    ("score: 100,001 pairs", lambda s: post(s, "/score", {"pairs": [[1, 2]] * (MAX_PAIRS + 1)}), 422,
     reason_detail("at most 100000")),
    ("score: 5 MB extra field (under the body limit)",
     lambda s: post(s, "/score", {"pairs": [[1, 2]], "junk": "x" * (5 << 20)}), 422, reason_detail("extra_forbidden")),
    ("recommend: 1,000-character task", lambda s: post(s, "/recommend", {"user_id": 1, "task": "t" * 1000}), 422,
     reason_detail("at most 64")),
    ("score: NaN id", lambda s: post(s, "/score", b'{"pairs": [[NaN, 1]]}'), 422, reason_detail("NaN")),
    ("score: Infinity id", lambda s: post(s, "/score", b'{"user_ids": [Infinity], "item_ids": [1]}'), 422,
     reason_detail("NaN")),
    ("score: -Infinity id", lambda s: post(s, "/score", b'{"pairs": [[1, -Infinity]]}'), 422, reason_detail("NaN")),
    ("score: 1e400 id", lambda s: post(s, "/score", b'{"pairs": [[1e400, 1]]}'), 422, reason_detail("NaN")),
    ("recommend: NaN k", lambda s: post(s, "/recommend", b'{"user_id": 1, "k": NaN}'), 422, reason_detail("NaN")),
    ("score: NaN in 100,000 pairs", lambda s: post(s, "/score", "{\"pairs\": [" + "[1, 2], " * 99_999 + "[NaN, 2]]}"),
     422, reason_detail("NaN")),
    ("score: truncated JSON", lambda s: post(s, "/score", b'{"pairs": [[1, 2'), 422, reason_detail("json_invalid")),
    ("score: 1M nested brackets", lambda s: post(s, "/score", b"[" * 1_000_000), 422, short()),
    ("score: slow body", lambda s: slow_body(s.port), 408, None),
    ("score: slow request head (slowloris)", lambda s: slow_head(s.port), 0, None),
    ("/reload: cross-origin with the token", lambda s: post(s, "/reload", b"", {**ADMIN, "Origin": "http://evil.example"}),
     403, None),
    ("/reload: cross-site fetch", lambda s: post(s, "/reload", b"", {**ADMIN, "Sec-Fetch-Site": "cross-site"}), 403, None),
    ("/reload: no token", lambda s: post(s, "/reload", b""), 401, None),
    ("/reload: wrong token", lambda s: post(s, "/reload", b"", {"Authorization": "Bearer nope"}), 401, None),
    ("/reload: the token", lambda s: post(s, "/reload", b"", ADMIN), 200, None),
    ("forged Host header", lambda s: get(s, "/health", {"Host": "evil.example"}), 400, None),
    ("/reload: pointer escaping the store", lambda s: reload_with_pointer(
        s, json.dumps({"version": "../../../../tmp/x/bundle"})), 503, still_serving),
    ("/reload: torn pointer", lambda s: reload_with_pointer(s, '{"version": "2026-01'), 503, still_serving),
    ("/reload: bundle copied under a new name", renamed_copy, 503, still_serving),
    ("/docs and /openapi.json are off", lambda s: get(s, "/openapi.json"), 404, None),
    ("8 maximum-size /score at once", lambda s: concurrent_max_size(s.url), "200/503", None),
]


def figure(name: str, status, seconds: float, health: dict, fivexx: int) -> dict:
    """One row of the figures table."""
    return {"probe": name, "status": status, "seconds": round(seconds, 2),
            "health_max_ms": round(health["max_s"] * 1000, 1), "health_failed": health["failed"],
            "unexpected_5xx": fivexx, "client_starved_ms": round(health["starved_s"] * 1000, 1)}


def measured(server, watcher, probe) -> tuple[object, dict, float]:
    """The probe's answer, what the /health client saw meanwhile, and the probe's seconds."""
    t0 = time.perf_counter()
    with health_watch(watcher) as health:
        answer = probe(server)
    return answer, health, time.perf_counter() - t0


@pytest.mark.parametrize("name, probe, expected, check", PROBES, ids=[p[0] for p in PROBES])
def test_probe(server, watcher, name, probe, expected, check):
    answer, health, seconds = measured(server, watcher, probe)
    if isinstance(answer, list) and HEALTH_LIMIT_S <= health["max_s"] < FROZEN_S:
        # The load probe (maximum-size requests at once) is the one whose /health figure depends on
        # the cores: it passed at 16-35 ms in six runs alone, and once took 157 ms late in a full
        # suite run. It is repeated once (both attempts are in the figures); a server that froze
        # (>= FROZEN_S), or stalls twice in a row, still fails.
        statuses = "/".join(str(r.status_code) for r in answer)
        server.figures.append(figure(f"{name} (first attempt)", statuses, seconds, health, 0))
        answer, health, seconds = measured(server, watcher, probe)
    if isinstance(answer, list):  # concurrent requests: each 200 or 503 with Retry-After, some of each
        statuses = [r.status_code for r in answer]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        assert all(r.headers.get("retry-after") == "1" for r in answer if r.status_code == 503)
        assert all(len(r.json()["scores"]) == MAX_PAIRS for r in answer if r.status_code == 200)
        status, fivexx = "/".join(map(str, sorted(statuses))), 0
    else:
        status = answer.status_code if isinstance(answer, httpx.Response) else answer.status
        text = answer.text if isinstance(answer, httpx.Response) else answer.body.decode("latin-1")
        assert status == expected, text[:500]
        if expected == 0:  # the slow head: closed, within the header timeout and a margin
            assert answer.headers["closed_after_s"] < HEADER_TIMEOUT_S + 2
        if check is not None:
            check(answer, server)
        fivexx = int(status >= 500 and status not in (503, 504))
    starved = health["starved_s"] > STARVED_S
    server.figures.append(figure(name, status, seconds, health, fivexx))
    assert server.proc.poll() is None, "the server died"
    assert health["failed"] == 0, health
    limit = FROZEN_S if starved else HEALTH_LIMIT_S
    assert health["max_s"] < limit, (f"/health took {health['max_s'] * 1000:.0f} ms during the probe (limit "
                                     f"{limit * 1000:.0f} ms; the client's own waits overran by at most "
                                     f"{health['starved_s'] * 1000:.0f} ms)")


def test_after_the_probes(server, record_property):
    """Still up, memory back near where it started, every refusal counted by reason, /model
    naming no path of the machine."""
    assert server.proc.poll() is None
    rss = rss_bytes(server.proc.pid)
    model = get(server, "/model").json()
    metrics = get(server, "/metrics").text
    assert str(server.root) not in json.dumps(model) and "/" not in json.dumps(model.get("bundle", ""))
    for reason in ("body_too_large", "body_timeout", "non_finite", "invalid_json", "validation", "overloaded",
                   "cross_origin", "unauthorized", "host"):
        assert f'moge_rejections_total{{reason="{reason}"}}' in metrics, reason
    figures = {"probes": len(server.figures), "crashes": 0, "stalls": sum(f["health_max_ms"] >= HEALTH_LIMIT_S * 1000 for f in server.figures),
               "unexpected_5xx": sum(f["unexpected_5xx"] for f in server.figures),
               "probes_on_a_starved_machine": sum(f["client_starved_ms"] > STARVED_S * 1000 for f in server.figures),
               "rss_before_mb": round(server.rss_before / 2**20), "rss_after_mb": round(rss / 2**20),
               "health_max_ms": max((f["health_max_ms"] for f in server.figures), default=0.0)}
    record_property("hostile", {"rows": server.figures, "summary": figures})
    assert rss <= 1.5 * server.rss_before, figures
