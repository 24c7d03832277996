"""Backfill policies and ranged runs: a run over many days records each day as a one-day run does.

A backfill, a catch-up or ``python -m orchestration.run_flow --range`` hands a run many days of
an asset (:data:`DATA_POLICY`: ``automation.data_days_per_run`` days per run, in parallel where
the window mappings allow; :data:`MODEL_POLICY`: the model chain's range in one run, days in
date order). Every asset body goes through :func:`materialize_days`, one day or many:

* the days run in date order in this process (:func:`ml_core.stages.ranges.run_days`), each as
  a one-day run runs it: its inputs are the days its partition mapping gives *that* day
  (:func:`upstream_days`), not the union over the range;
* each day is recorded as soon as it is written, as its own ``AssetMaterialization`` with that
  day's metadata, data version (the stored partition's content hash), code version and input
  versions (:func:`version_tags`). So a failure on day k leaves days < k materialized in the
  instance (and in a backfill's progress), and the error names day k;
* a retry passes the days already recorded by the same run (a step retry) or by the failed run
  it re-executes, and resumes from day k;
* the step's output then records nothing more.

Why not Dagster's own ranged output: it gives every partition of the range the same tags, so
one data version for all days (Dagster issues #18123, #17836: no per-partition data version nor
partial success for a range). The output's events are switched off with the metadata key that
Dagster's observable source assets use for the same purpose (:data:`_EVENTS_RECORDED`); the
suite checks that each day has exactly one materialization per run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION

from assets.partitions import CONFIG
from ml_core.stages.ranges import run_days

#: Output metadata that tells Dagster the step's materializations were recorded by the body.
_EVENTS_RECORDED = SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION
#: Runs whose materializations a retry keeps: the failed runs it re-executes.
_RETRIED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def backfill_policy(days_per_run: int) -> dg.BackfillPolicy:
    """``single_run`` for 0 (a whole range in one run), else ``multi_run(days_per_run)``."""
    return dg.BackfillPolicy.single_run() if days_per_run == 0 else dg.BackfillPolicy.multi_run(days_per_run)


#: The data assets (logs, graphs, features, samples): ``automation.data_days_per_run`` days a run.
DATA_POLICY = backfill_policy(CONFIG.automation.data_days_per_run)
#: The model chain (trained_model, model_evaluation, deployed_model): ``automation.model_days_per_run``.
MODEL_POLICY = backfill_policy(CONFIG.automation.model_days_per_run)


def upstream_days(context: dg.AssetExecutionContext, parent: str, day: str, child: str | None = None) -> list[str]:
    """The days of ``parent`` that ``day`` of ``child`` (default: the asset) reads: its partition
    mapping applied to that one day, as in a one-day run (sorted)."""
    graph = context.job_def.asset_layer.asset_graph
    key = dg.AssetKey(child) if child else context.assets_def.key
    mapped = graph.get_parent_partition_keys_for_child(day, dg.AssetKey(parent), key)
    return sorted(mapped.partitions_subset.get_partition_keys())


def version_tags(context: dg.AssetExecutionContext, key: dg.AssetKey, day: str, version: str) -> dict[str, str]:
    """The data-version tags of ``key``'s materialization of ``day``: its data version (user
    provided: the stored partition's hash), its code version, and per input the version of the
    days that day read (one day: its version; several: the hash of theirs in date order, as
    Dagster hashes a mapped input) and the newest of their events (what the UI's "unsynced"
    compares later events with)."""
    graph = context.job_def.asset_layer.asset_graph
    node = graph.get(key)
    tags = {CODE_VERSION_TAG: node.code_version or context.run_id, DATA_VERSION_TAG: version,
            DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
    for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
        versions, pointer, up = [], None, graph.get(parent)
        # a parent outside the assets this job was built from has no partitions here: its newest event
        days = upstream_days(context, parent.to_user_string(), day, key.to_user_string()) if up.partitions_def else [None]
        for p in days:
            rec = context.instance.get_latest_data_version_record(parent, up.is_external, p)
            if rec is not None:
                versions.append((extract_data_version_from_entry(rec.event_log_entry) or DEFAULT_DATA_VERSION).value)
                pointer = max(pointer or 0, rec.storage_id)
        joined = versions[0] if len(versions) == 1 else hashlib.sha256("".join(versions).encode()).hexdigest()
        tags[get_input_data_version_tag(parent)] = joined if versions else DEFAULT_DATA_VERSION.value
        tags[get_input_event_pointer_tag(parent)] = str(pointer) if pointer else NULL_EVENT_POINTER
    return tags


def _retried_runs(context: dg.AssetExecutionContext) -> set[str]:
    """This run and the failed runs it re-executes (its parent, theirs, ...)."""
    runs, parent = {context.run_id}, context.run.parent_run_id
    while parent and parent not in runs:
        run = context.instance.get_run_by_id(parent)
        if run is None or run.status not in _RETRIED:
            break
        runs.add(parent)
        parent = run.parent_run_id
    return runs


def days_done(context: dg.AssetExecutionContext, keys: Iterable[dg.AssetKey], days: Iterable[str]) -> set[str]:
    """The days whose newest materialization of every key of ``keys`` comes from this run or a
    failed run it retries: written already, passed by the retry."""
    runs = _retried_runs(context)

    def done(day: str) -> bool:
        for key in keys:
            rec = context.instance.get_latest_data_version_record(key, False, day)
            if rec is None or rec.run_id not in runs:
                return False
        return True

    return {d for d in days if done(d)}


def materialize_days(context: dg.AssetExecutionContext,
                     compute: Callable[[str], dg.MaterializeResult | Iterable[dg.MaterializeResult]]) -> Iterator:
    """The body of a daily asset over its run's days (one, or a range): ``compute(day)`` writes
    day ``day`` and returns its result(s) (:func:`assets.common.result`, one per asset of a
    multi-asset); each is recorded as that day's materialization before the next day starts.
    Yield from it: ``yield from materialize_days(context, day_result)``."""
    keys = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
    days = context.partition_keys
    name = ", ".join(k.to_user_string() for k in keys)
    retry = len(days) > 1 or context.retry_number or context.run.parent_run_id  # else nothing can be done yet
    done = days_done(context, keys, days) if retry else set()
    if done:
        context.log.info(f"{name}: {len(done)} of {len(days)} days already written by this run or the failed run it "
                         f"retries ({min(done)}..{max(done)}): resuming after them")

    def day_results(day: str) -> list[dg.MaterializeResult]:
        out = compute(day)
        return [out] if isinstance(out, dg.MaterializeResult) else list(out)

    for day, results in run_days(name, days, day_results, done):
        for res in results:
            key = res.asset_key or context.assets_def.key
            version = res.data_version.value if res.data_version else None
            yield dg.AssetMaterialization(asset_key=key, partition=day, metadata=res.metadata,
                                          tags=version_tags(context, key, day, version) if version else None)
        if len(days) > 1:
            context.log.info(f"{name}: {day} done")
    for key in keys:  # the days are recorded: the outputs add no event of their own
        yield dg.MaterializeResult(asset_key=key, metadata={_EVENTS_RECORDED: True})
