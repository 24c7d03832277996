"""The ``moge`` command.

::

    moge serve [--root data | --bundle PATH] [--host 127.0.0.1] [--port 8000] [--retrieval N] [--watch SECONDS]
               [--max-body-bytes N] [--max-concurrent N] [--request-timeout S] [--admin-token-file PATH] ...
    moge score --input pairs.parquet|csv --output scores.parquet|csv [--root data | --bundle PATH]

``--root`` defaults to the config's ``storage.root`` ($MOGE_CONFIG or data/pipeline.toml); the
production model is read from the config's ``[registry]``: the local store under the root
(default) or the shared MLflow registry (``backend = "mlflow"``).
``moge score`` streams the input in chunks of ``--chunk-rows`` rows and writes the input columns
plus one ``score_<task>`` column per task (the output appears atomically when complete).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

SCORE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def _file_format(path: Path) -> str:
    fmt = SCORE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(SCORE_FORMATS)}")
    return fmt


def _registry(args):
    """The storage root (``--root`` or the config's ``storage.root``) and the ``[registry]``
    section of the configuration ($MOGE_CONFIG or data/pipeline.toml)."""
    from ml_core.config import load_config

    cfg = load_config()
    return args.root or cfg.storage.root, cfg.registry


def _scorer(args):
    from ml_core.serving.scorer import Scorer

    if args.bundle:
        return Scorer.from_bundle(args.bundle, threads=args.threads, allow_unsealed=args.allow_unsealed)
    root, registry = _registry(args)
    return Scorer.from_registry(root, registry, threads=args.threads)


def _read_batches(path: Path, chunk_rows: int):
    """Record batches of at most ``chunk_rows`` rows, read lazily."""
    if _file_format(path) == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        yield pf.schema_arrow
        yield from pf.iter_batches(batch_size=chunk_rows)
    else:
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 24))
        yield reader.schema
        for batch in reader:
            for start in range(0, batch.num_rows, chunk_rows):
                yield batch.slice(start, chunk_rows)


def _id_column(batch, name: str, path: Path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    col = batch.column(name)
    if col.null_count:
        raise ValueError(f"{path}: column {name!r} has {col.null_count} null ids in this chunk")
    try:
        return np.asarray(pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"{path}: column {name!r} must hold integer ids ({e})") from None


def score_file(scorer, input_path: str | Path, output_path: str | Path, chunk_rows: int = 100_000,
               user_col: str = "user_id", item_col: str = "item_id", log=None) -> dict:
    """Batch scoring: ``input_path`` (Parquet/CSV with ``user_col``, ``item_col``) to
    ``output_path`` = the input columns + ``score_<task>`` (float32), chunk by chunk."""
    import numpy as np
    import pyarrow as pa

    log = log or (lambda msg: None)
    src, dst = Path(input_path), Path(output_path)
    out_fmt = _file_format(dst)
    if not src.exists():
        raise FileNotFoundError(f"input file {src} does not exist")
    batches = _read_batches(src, chunk_rows)
    in_schema = next(batches)
    missing = [c for c in (user_col, item_col) if c not in in_schema.names]
    if missing:
        raise ValueError(f"{src}: missing column(s) {missing}; found {in_schema.names}")
    score_cols = [f"score_{t}" for t in scorer.tasks]
    keep = [f for f in in_schema if f.name not in score_cols]  # re-scoring replaces old scores
    schema = pa.schema([*keep, *(pa.field(c, pa.float32()) for c in score_cols)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{uuid.uuid4().hex[:8]}"
    if out_fmt == "parquet":
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(tmp, schema)
    else:
        import pyarrow.csv as pcsv

        writer = pcsv.CSVWriter(tmp, schema)
    rows = chunks = 0
    unknown_users: set[int] = set()
    unknown_items: set[int] = set()
    t0 = time.perf_counter()
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            r = scorer.score_pairs(_id_column(batch, user_col, src), _id_column(batch, item_col, src))
            cols = [batch.column(f.name) for f in keep]
            cols += [pa.array(np.ascontiguousarray(r.scores[:, k], np.float32)) for k in range(len(score_cols))]
            writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
            unknown_users.update(r.unknown_users)
            unknown_items.update(r.unknown_items)
            rows += batch.num_rows
            chunks += 1
            log(f"scored {rows} rows")
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        try:
            writer.close()
        except Exception:
            pass
        tmp.unlink(missing_ok=True)
        raise
    return {"input": str(src), "output": str(dst), "rows": rows, "chunks": chunks, "version": scorer.version,
            "tasks": scorer.tasks, "unknown_users": len(unknown_users), "unknown_items": len(unknown_items),
            "seconds": round(time.perf_counter() - t0, 3)}


# -- commands ----------------------------------------------------------------------------------
def admin_token(token_file: str | None) -> str:
    """The admin token of ``moge serve``: the first line of ``token_file`` when given, else
    ``$MOGE_ADMIN_TOKEN`` ("" = none: POST /reload is refused)."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"--admin-token-file {token_file} is empty")
        return token
    return os.environ.get("MOGE_ADMIN_TOKEN", "").strip()


def serve_limits(args):
    """The :class:`~ml_core.serving.guard.Limits` of the ``moge serve`` flags; ``Host`` names
    default to the loopback names when the server listens on a loopback address."""
    import ipaddress

    from ml_core.serving.guard import LOOPBACK_HOSTS, Limits

    if args.allowed_hosts:
        hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    else:
        try:
            loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
        except ValueError:  # a host name
            loopback = False
        hosts = LOOPBACK_HOSTS if loopback else ()
    return Limits(max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout, header_timeout_s=args.header_timeout,
                  request_timeout_s=args.request_timeout, max_concurrent=args.max_concurrent,
                  max_connections=args.max_connections, allowed_hosts=() if "*" in hosts else hosts)


def cmd_serve(args) -> int:
    import uvicorn

    from ml_core.registry.signing import bundle_key
    from ml_core.serving.app import create_app
    from ml_core.serving.guard import http_protocol
    from ml_core.serving.state import ServeOptions

    limits = serve_limits(args)
    # a server following the pointer loads whatever it names: only signed bundles (README "Signed bundles")
    require_signature = bundle_key() is not None or (args.watch > 0 and not args.allow_unsigned)
    options = ServeOptions(threads=args.threads, retrieval=args.retrieval, index=args.index, ef_search=args.ef_search,
                           prior_users=args.prior_users, watch_s=args.watch, limits=limits,
                           admin_token=admin_token(args.admin_token_file), docs=args.docs,
                           allow_unsealed=args.allow_unsealed, require_signature=require_signature)
    if args.bundle:
        app = create_app(args.bundle, options=options)
    else:
        root, registry = _registry(args)
        app = create_app(root, options=options, registry=registry)
    # SIGINT/SIGTERM: uvicorn stops accepting, lets requests in progress finish for up to
    # --graceful-shutdown seconds, then exits: status 0 after SIGINT; after SIGTERM uvicorn raises
    # it again once shut down, so the process ends by the signal (-15)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=http_protocol(limits.header_timeout_s),
                limit_concurrency=limits.max_connections, timeout_graceful_shutdown=args.graceful_shutdown)
    return 0


def cmd_score(args) -> int:
    scorer = _scorer(args)
    log = (lambda m: print(m, file=sys.stderr)) if args.verbose else None
    stats = score_file(scorer, args.input, args.output, args.chunk_rows, args.user_col, args.item_col, log=log)
    print(json.dumps(stats))
    return 0


def cmd_republish(args) -> int:
    from ml_core.stages.deployment import republish
    from ml_core.storage import Lake

    root, registry = _registry(args)
    print(republish(Lake(root), args.version, registry))
    return 0


def _add_source(p: argparse.ArgumentParser, threads: int) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--root", help="storage root holding registry/ (default: the config's storage.root); "
                                  "the production version is used")
    g.add_argument("--bundle", help="a deployed bundle directory to use instead of the production version")
    p.add_argument("--allow-unsealed", action="store_true",
                   help="with --bundle: load a bundle that has no _FILES.json without checking its files "
                        "(default: refused)")
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch CPU threads, 0 = torch's choice (default: {threads})")


def _add_limits(p: argparse.ArgumentParser) -> None:
    """``moge serve``'s request limits and admin flags (defaults: :class:`ml_core.serving.guard.Limits`)."""
    from ml_core.serving.guard import Limits

    d = Limits()
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"largest request body; larger ones get 413 before parsing (default: {d.max_body_bytes})")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help="/score and /recommend requests at once, more get 503 + Retry-After (default: 0 = as many "
                        f"{d.request_memory_mib} MiB maximum-size requests as half the available memory holds, "
                        "at most 2 per core)")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout_s, metavar="SECONDS",
                   help=f"answer 504 after this long (default: {d.request_timeout_s})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="SECONDS",
                   help=f"a body must arrive within this long, else 408 (default: {d.body_timeout_s})")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="SECONDS",
                   help=f"close a connection that sends no complete request head within this long (default: "
                        f"{d.header_timeout_s})")
    p.add_argument("--max-connections", type=int, default=d.max_connections,
                   help=f"open connections; more get 503 from uvicorn (default: {d.max_connections})")
    p.add_argument("--allowed-hosts", default="",
                   help="comma-separated Host header names to answer ('*' = any; default: the loopback names when "
                        "--host is a loopback address, else any)")
    p.add_argument("--admin-token-file",
                   help="file whose first line is the bearer token POST /reload needs (default: $MOGE_ADMIN_TOKEN; "
                        "neither = /reload is refused)")
    p.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json (default: off)")
    p.add_argument("--graceful-shutdown", type=float, default=5.0, metavar="SECONDS",
                   help="on SIGINT/SIGTERM, how long requests in progress may take to finish (default: 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moge", description="MoGE recommendation pipeline")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="serve the deployed model over HTTP (FastAPI + uvicorn)")
    # requests run concurrently in uvicorn's thread pool: one torch thread each avoids
    # oversubscribing the cores (on a shared 2-core box, 2 threads were ~10x slower than 1)
    _add_source(p, threads=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument("--retrieval", type=int, default=0, metavar="N",
                   help="/recommend ranks the N items an ANN index retrieves for the user instead of the whole "
                        "catalogue (0 = off, rank every item; docs/serving.md, 'Serving at catalogue scale')")
    p.add_argument("--index", default="hnsw", choices=["hnsw", "flat"], help="the retrieval index (default: hnsw)")
    p.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth (default: 128)")
    p.add_argument("--prior-users", type=int, default=8,
                   help="users whose ranker scores of every item make the user-independent half of the retrieved "
                        "candidates (0 = the index alone; default: 8)")
    p.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                   help="check the production pointer every SECONDS and hot-swap to a newly promoted version "
                        "(0 = off: POST /reload only); loads only bundles signed with $MOGE_BUNDLE_KEY")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="with --watch and no $MOGE_BUNDLE_KEY: follow the pointer to unsigned bundles (default: "
                        "refused; with the key set, unsigned bundles are always refused)")
    _add_limits(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("score", help="batch-score (user_id, item_id) pairs of a Parquet/CSV file")
    p.add_argument("--input", required=True, type=Path, help="pairs file (.parquet or .csv)")
    p.add_argument("--output", required=True, type=Path, help="output file (.parquet or .csv)")
    _add_source(p, threads=0)
    p.add_argument("--chunk-rows", type=int, default=100_000, help="rows scored at a time (default: 100000)")
    p.add_argument("--user-col", default="user_id")
    p.add_argument("--item-col", default="item_id")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("republish", help="publish a bundle version again from the lake (its store copy is corrupt)")
    p.add_argument("version", help="the bundle version, e.g. 2026-01-03-0123456789")
    p.add_argument("--root", help="storage root (default: the config's storage.root)")
    p.set_defaults(func=cmd_republish)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "chunk_rows", 1) < 1:
        parser.error("--chunk-rows must be >= 1")
    from ml_core.storage import CorruptPartitionError

    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, CorruptPartitionError) as e:
        print(f"moge {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
