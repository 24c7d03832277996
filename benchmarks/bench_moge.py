"""Training throughput of MoGE against MMoE, same run, same batches; sampling vs compute.

Both models are trained step by step, interleaved, on the same sample rows (MMoE's batches carry
no subgraphs, MoGE's carry one sampled subgraph per channel). For every step the script times

* ``sample``: building the batch (for MoGE: neighbour sampling of three channels + gathering
  node inputs; for MMoE: gathering the rows),
* ``compute``: forward, loss, backward and the optimizer step (the trainer's loop body and its
  optimizer, ``train.optimizer``: Adam with row-sparse updates of the embedding tables),

and prints samples/s = B / (sample + compute) for each model, MoGE / MMoE, and the share of
MoGE's step spent sampling. ``--prefetch`` also measures both models end to end with batches
built ahead while the model computes, in the trainer's background thread
(``batching.iterate(prefetch=4)``) and in a DataLoader worker process (no GIL sharing). Interleaving makes the ratio robust to other jobs on the machine.

``--profile N`` then profiles N more MoGE steps part by part (:func:`profile_parts`): the
sampling, the feature encoders (``h^0``), each graph channel's propagation, ``Z``, the pair
input, the experts and gates, the towers, the L2 term and the other losses, each with its
forward and its backward time (backward operations are attributed to the part whose forward
operation created them, through the autograd sequence numbers of ``torch.profiler``), then the
optimizer step. The profiler's own overhead inflates every part; the shares are what it is for.

Data: the lake of ``benchmarks/compare_models.py`` (built on first use).

Several MoGE variants (``--moge-args``, one JSON of model_args each) and several datasets are
measured in one run, each variant interleaved with the same MMoE.

    python benchmarks/bench_moge.py --dataset synthetic --steps 60
    python benchmarks/bench_moge.py --dataset synthetic --steps 20 --profile 30
    python benchmarks/bench_moge.py --dataset synthetic synthetic_large --moge-args '{}' '{"state_cache": 100000}' --prefetch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_models import DATASETS, defaults_config, prepare

from ml_core import stages as P
from ml_core.batching import BatchMaker, batch_plan, iterate
from ml_core.contracts.batch import CHANNELS
from ml_core.contracts.day import DayContext
from ml_core.contracts.spec import ModelSpec
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.models.registry import build_model
from ml_core.storage import Lake
from ml_core.train.distributed import resolve_device
from ml_core.train.extensions import make_optimizer
from ml_core.train.loop import configure_threads


class _PlanBatches(torch.utils.data.Dataset):
    """Batch ``j`` of ``plan`` built by ``makers`` (the sampling runs in a DataLoader worker)."""

    def __init__(self, makers, plan, seed: int):
        self.makers, self.plan, self.seed = makers, plan, seed
        self.gen = None

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, j):
        if self.gen is None:  # one generator per worker process, seeded once
            info = torch.utils.data.get_worker_info()
            self.gen = torch.Generator().manual_seed(self.seed + (info.id if info else 0))
        c, rows = self.plan[j]
        return self.makers[c].make(rows, self.gen)


def background_batches(makers, plan, seed: int, workers: int = 1):
    """Batches of ``plan`` in order, sampled ``workers`` processes ahead of the training loop."""
    return torch.utils.data.DataLoader(_PlanBatches(makers, plan, seed), batch_size=None, shuffle=False,
                                       num_workers=workers, prefetch_factor=4, persistent_workers=False,
                                       collate_fn=lambda b: b)


def step(model, opt, batch, device):
    batch = batch.to(device)
    _, loss, _ = model.compute_loss(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _labelled(fn, label):
    """``fn`` run inside a ``torch.profiler`` region named ``label`` (a callable: of the arguments)."""
    from torch.profiler import record_function

    def run(*a, **kw):
        with record_function(label(*a, **kw) if callable(label) else label):
            return fn(*a, **kw)
    return run


#: MoGE's parts as profiled: (attribute path, region label); each wraps that bound method
PARTS = (("mgnn.initial", "h0 (feature encoders)"), ("mgnn.propagate", lambda name, *a, **k: f"channel {name}"),
         ("mgnn.propagate_cached", lambda name, *a, **k: f"channel {name}"),
         ("graph_interactions", "Z (graph interactions)"), ("with_history", "pair input"),
         ("moe.forward", "experts and gates"), ("towers.forward", "towers"), ("regularizer", "L2 term"),
         ("compute_loss", "compute_loss"))


def profile_parts(model, opt, batches, device) -> list[dict]:
    """Per part of MoGE's training step (:data:`PARTS`), forward and backward CPU ms per step over
    ``batches`` (each: ``(sample seconds, batch)``), plus the sampling and the optimizer; the
    remainder of ``compute_loss`` beyond its labelled parts is "other losses"."""
    from torch.profiler import profile

    for path, label in PARTS:
        *owner, name = path.split(".")
        obj = model
        for o in owner:
            obj = getattr(obj, o)
        setattr(obj, name, _labelled(getattr(obj, name), label))
    opt_s = []
    with profile() as prof:
        for _, batch in batches:
            batch = batch.to(device)
            _, loss, _ = model.compute_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t0 = time.perf_counter()
            opt.step()
            opt_s.append(time.perf_counter() - t0)
    labels = {lab for _, lab in PARTS if isinstance(lab, str)} | {f"channel {c}" for c in CHANNELS}
    events = prof.events()
    regions = sorted((e.time_range.start, e.time_range.end, e.name) for e in events if e.name in labels)
    forward, backward, part_of = {}, {}, {}
    for e in events:  # forward operations: the innermost region around them
        if e.sequence_nr < 0 or e.name in labels or e.name.startswith("autograd::"):
            continue
        inner = [r for r in regions if r[0] <= e.time_range.start and e.time_range.end <= r[1]]
        if inner:
            part_of.setdefault(e.sequence_nr, min(inner, key=lambda r: r[1] - r[0])[2])
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function"):
            part = part_of.get(e.sequence_nr, "backward (unattributed)")
            backward[part] = backward.get(part, 0.0) + e.cpu_time_total
    for start, end, name in regions:
        forward[name] = forward.get(name, 0.0) + (end - start)
    n = len(batches)
    inner = sum(v for k, v in forward.items() if k != "compute_loss")
    forward["other losses"] = forward.pop("compute_loss", 0.0) - inner  # BCE, task weighting, co-loss
    backward["other losses"] = backward.pop("compute_loss", 0.0)
    rows = [{"part": "sampling (batch building)", "forward_ms": 1e3 * sum(t for t, _ in batches) / n, "backward_ms": 0.0}]
    for part in [*dict.fromkeys([*forward, *backward])]:
        rows.append({"part": part, "forward_ms": forward.get(part, 0.0) / 1e3 / n, "backward_ms": backward.get(part, 0.0) / 1e3 / n})
    rows.append({"part": "optimizer step", "forward_ms": 1e3 * sum(opt_s) / n, "backward_ms": 0.0})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), nargs="+", default=["synthetic"],
                    help="one or more, measured one after the other in this run (e.g. synthetic synthetic_large)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/moge_compare"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)  # paper
    ap.add_argument("--dim", type=int, default=64)  # paper
    ap.add_argument("--fanouts", type=int, nargs="+", default=[10, 5])  # L = 2 (paper)
    ap.add_argument("--threads", type=int, default=1)  # the trainer's default
    ap.add_argument("--prefetch", action="store_true")
    ap.add_argument("--moge-args", nargs="+", default=["{}"],
                    help="JSON model_args of each MoGE variant, measured side by side (e.g. '{}' '{\"state_cache\": 100000}')")
    ap.add_argument("--profile", type=int, default=0, help="then profile this many MoGE steps part by part")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    results = [run_dataset(args, name) for name in args.dataset]
    if len(results) > 1:
        print("\nMoGE / MMoE throughput, step by step: " + ", ".join(
            f"{r['dataset']} {name} {v:.2f}" for r in results for name, v in r["ratios"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2) + "\n")


def run_dataset(args, dataset: str) -> dict:
    """The comparison (and the profile, the end-to-end runs) on one dataset; its results."""
    overrides, eval_day = DATASETS[dataset]
    root = args.root / dataset
    cfg = defaults_config(root, [*overrides, f'storage.root="{root}"'])
    lake = Lake(root)
    train_days = prepare(cfg, lake, eval_day, log=lambda m: None)
    threads = configure_threads(args.threads)
    device = resolve_device("auto")
    days = [P.load_day_inputs(lake, d) for d in train_days]
    tasks = list(cfg.samples.tasks)
    fspec = FeatureSpec.fit(days, tasks)
    mspec = ModelSpec.from_feature_spec(fspec, args.dim, args.fanouts)
    ctxs = [DayContext.build(d, fspec, with_graph=True) for d in days]
    torch.manual_seed(0)
    variants = {("moge" if a.strip() == "{}" else f"moge {a.strip()}"): json.loads(a) for a in args.moge_args}
    models = {"mmoe": build_model("mmoe", mspec).to(device),
              **{name: build_model("moge", mspec, margs).to(device) for name, margs in variants.items()}}
    # the trainer's optimizer (train.optimizer, "adam": row-sparse updates of the embedding tables)
    opts = {k: make_optimizer(m, cfg.train, ctxs) for k, m in models.items()}
    for m in models.values():
        m.prepare(ctxs)  # the trainer's hook before step 1 (MoGE's |H|, its state cache's days)
    makers = {"mmoe": [BatchMaker(c, args.fanouts, need_graph=False) for c in ctxs],
              **{name: [BatchMaker(c, models[name].training_fanouts(args.fanouts), need_graph=True) for c in ctxs]
                 for name in variants}}
    main_variant = next(iter(variants))
    plan = batch_plan(ctxs, args.batch_size, shuffle=True, rng=np.random.default_rng(0))
    plan = [p for p in plan if len(p[1]) == args.batch_size]
    profile_plan = plan[args.warmup + args.steps:][: args.profile]
    plan = plan[: args.warmup + args.steps]
    gen = torch.Generator().manual_seed(0)
    times = {k: {"sample": [], "compute": []} for k in models}
    sizes = []
    for n, (c, rows) in enumerate(plan):
        for name in models:
            t0 = time.perf_counter()
            batch = makers[name][c].make(rows, gen)
            t1 = time.perf_counter()
            step(models[name], opts[name], batch, device)
            t2 = time.perf_counter()
            if n >= args.warmup:
                times[name]["sample"].append(t1 - t0)
                times[name]["compute"].append(t2 - t1)
            if name == main_variant and n >= args.warmup:
                sizes.append({k: (ch.num_nodes, ch.edge_index.shape[1]) for k, ch in batch.channels.items()})

    B = args.batch_size
    tot = {k: np.sum(v["sample"]) + np.sum(v["compute"]) for k, v in times.items()}
    sps = {k: B * len(times[k]["sample"]) / tot[k] for k in times}
    print(f"dataset={dataset} device={device} threads={threads} batch={B} d={args.dim} fanouts={args.fanouts} "
          f"steps={args.steps} (after {args.warmup} warm-up), torch {torch.__version__}")
    mean_nodes = {k: np.mean([s[k][0] for s in sizes]) for k in sizes[0]}
    mean_edges = {k: np.mean([s[k][1] for s in sizes]) for k in sizes[0]}
    print("MoGE subgraph per batch (mean): " + ", ".join(f"{k} {mean_nodes[k]:.0f} nodes / {mean_edges[k]:.0f} edges" for k in mean_nodes))
    print("| model | samples/s | sample ms/step | compute ms/step | sampling share |")
    print("|---|---|---|---|---|")
    for k in models:
        s, cpt = np.mean(times[k]["sample"]) * 1e3, np.mean(times[k]["compute"]) * 1e3
        print(f"| {k} | {sps[k]:.0f} | {s:.1f} | {cpt:.1f} | {s / (s + cpt):.0%} |")
    ratios = {name: round(sps[name] / sps["mmoe"], 3) for name in variants}
    for name, r in ratios.items():
        print(f"{name} / MMoE throughput: {r:.2f} (target >= 0.33)")

    e2e = {}
    if args.prefetch:
        # end to end, each model alone, batches built ahead while the model computes: the
        # trainer's background thread (batching.iterate(prefetch=4)) and a worker process
        todo = plan[args.warmup:]
        for how in ("thread", "process"):
            rates = {}
            for name in models:
                model, opt = models[name], opts[name]
                if how == "thread":
                    it = iterate(makers[name], todo, torch.Generator().manual_seed(1), prefetch=4)
                else:
                    it = iter(background_batches(makers[name], todo, seed=1))
                first = next(it)  # start-up is not part of the steady state
                t0 = time.perf_counter()
                step(model, opt, first, device)
                for batch in it:
                    step(model, opt, batch, device)
                rates[name] = B * len(todo) / (time.perf_counter() - t0)
            e2e[how] = {**{k: round(v) for k, v in rates.items()}, "moge_over_mmoe": round(rates[main_variant] / rates["mmoe"], 3)}
            print(f"end to end, sampling in a background {how}: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
                  + " samples/s; / MMoE: " + ", ".join(f"{k} {rates[k] / rates['mmoe']:.2f}" for k in variants))

    result = {"benchmark": "bench_moge", "date": time.strftime("%Y-%m-%d"), "dataset": dataset,
              "batch_size": B, "dim": args.dim, "fanouts": args.fanouts, "threads": threads, "steps": args.steps,
              "samples_per_s": {k: round(v) for k, v in sps.items()}, "moge_over_mmoe": ratios[main_variant], "ratios": ratios,
              "variants": variants, "end_to_end": e2e}
    for name in variants if profile_plan else ():
        timed_batches = []
        for c, rows in profile_plan:
            t0 = time.perf_counter()
            batch = makers[name][c].make(rows, gen)
            timed_batches.append((time.perf_counter() - t0, batch))
        parts = profile_parts(models[name], opts[name], timed_batches, device)
        total = sum(r["forward_ms"] + r["backward_ms"] for r in parts)
        print(f"\n{name} step by part ({len(timed_batches)} steps under torch.profiler, CPU ms per step):")
        print("| part | forward | backward | total | share |")
        print("|---|---|---|---|---|")
        for r in parts:
            t = r["forward_ms"] + r["backward_ms"]
            print(f"| {r['part']} | {r['forward_ms']:.2f} | {r['backward_ms']:.2f} | {t:.2f} | {t / total:.0%} |")
        print(f"| step | | | {total:.2f} | |")
        result.setdefault("profiles", {})[name] = {"steps": len(timed_batches), "parts_ms_per_step": parts}
        if name == main_variant:
            result["profile"] = result["profiles"][name]
    return result


if __name__ == "__main__":
    main()
