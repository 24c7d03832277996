"""MGOE: Macro Graph of Experts for multi-task recommendation (papers/mgoe-abstract.txt).

Only the abstract is public (no code, no method text), so everything below the three named parts
(macro graph, Macro Graph Bottom, Macro Prediction Tower) is a documented reading. The macro graph
follows its predecessor MacGNN: macro nodes are *item categories* and *user clusters*.

Macro graph (built once in :meth:`MGOE.prepare` from the training days, stored in buffers):

.. math::
    r_u[m] = \\#\\{(u, i) \\in H^{+} : \\mathrm{slot}(i) = m\\}, \\quad
    c(u) = \\mathrm{kmeans}_C\\big(r_u / \\|r_u\\|_2\\big)

    A^k[c, m] = \\#\\{(u, i) \\in H : y^k_{ui} = 1,\\ c(u) = c,\\ \\mathrm{slot}(i) = m\\}
        \\qquad (k = 1..K:\\ \\text{one macro graph per task})

Macro Graph Bottom, for sample (u, i) with ``c = c(u)``, ``m = slot(i)`` and every task k
(``U^k [C+1, d_m]``, ``I^k [M, d_m]`` task-specific macro embeddings):

.. math::
    n^k_c = \\sum_{m'} \\alpha^k_{c m'} I^k_{m'}, \\quad
    \\alpha^k_{c m'} = \\mathrm{softmax}_{m': A^k[c, m'] > 0}\\Big(
        \\tfrac{(I^k_m)^\\top W^k_u I^k_{m'}}{\\sqrt{d_m}} + \\log \\omega(A^k[c, m'])\\Big)

    n^k_m = \\sum_{c'} \\beta^k_{m c'} U^k_{c'}, \\quad
    \\beta^k_{m c'} = \\mathrm{softmax}_{c': A^k[c', m] > 0}\\Big(
        \\tfrac{(U^k_c)^\\top W^k_i U^k_{c'}}{\\sqrt{d_m}} + \\log \\omega(A^k[c', m])\\Big)

    z^k = W^k_z \\, [U^k_c \\| n^k_c \\| I^k_m \\| n^k_m] + b^k_z

    \\hat{x} = [p_u \\| q_i \\| z^1 \\| \\dots \\| z^K], \\quad
    o^k = \\sum_{n=1}^{N} g^k(\\hat{x})_n f^n(\\hat{x})
        \\qquad \\text{(MMoE body: shared experts, one softmax gate per task)}

Macro Prediction Tower (each task attends over all tasks' macro embeddings):

.. math::
    \\gamma^k_j = \\mathrm{softmax}_{j = 1..K}\\Big(\\tfrac{(W^k_q o^k)^\\top W_{key} z^j}{\\sqrt{d_m}}\\Big),
    \\quad \\hat{y}^k = \\sigma\\big(v_k^\\top [o^k \\| \\textstyle\\sum_j \\gamma^k_j z^j]\\big)

Readings of the abstract (documented choices):

* **Category column**: macro item nodes are the codes of one item categorical column
  (``category``: the item's ``category`` column when the source has one, else the first item
  categorical column; a name or an index into ``FeatureSpec.item.cats`` selects another).
  Raw codes can be sparse (Taobao's ``category_id`` makes a 5M-row table), so codes go through
  ``category_slot`` (buffer ``[cat_size]``): identity when ``cat_size <= max_categories``, else the
  ``max_categories - 1`` codes most frequent in the training samples get slots ``1..M-1`` (ties by
  code) and every other code shares slot 0 with "unknown".
* **User clusters** (MacGNN): k-means (k-means++ init from ``seed``, Lloyd iterations until the
  assignment is stable or ``kmeans_iters``) on the L2-normalised user x category-slot counts of
  the user's training *positives* (samples with a 1 for any task; the negatives are sampled
  items, not behaviour). Fewer distinct profiles than ``n_clusters`` leave surplus clusters empty.
* **Cold users**: cluster ``C`` (index ``n_clusters``) is dedicated to users without a positive
  training sample: the unknown id (row 0), ids first seen at evaluation, and known ids that had
  only negatives. Its macro-graph row is the sum of all clusters' rows (the population's category
  profile), so a cold user's neighbourhood is the overall category preference, and its embedding
  ``U^k_C`` is trained on the training users that had no positive. Chosen over "nearest cluster
  from features" because the cluster is defined by behaviour, which such a user lacks.
* **Macro edges**: counts of positive *training samples* per task (``A^k`` above),
  as MacGNN builds its macro graph from the training interactions. In training mode the
  sample's own labels are subtracted from its edge ``(c(u), slot(i))`` and from the cold row
  (``exclude_own_edge``): a label must not be an input of its own prediction (measured on the
  zoo's planted data: click / purchase GAUC +0.007 / +0.013, mean of 3 seeds). The user's
  *cluster* still comes from its own training positives (MacGNN's transductive reading). Before
  :meth:`prepare` every user is cold and ``A = 0``. The model reads no day graph
  (``graph_needs = GraphNeeds.NONE``): the samples are available to every model, and a macro graph of
  ``C x M`` nodes needs no sampling.
* **Neighbourhood aggregation**: attention of the pair's other macro node (the target category
  queries the cluster's categories and vice versa: a bilinear score per task and side) plus
  ``log omega(A)``, i.e. the attention is proportional to the edge importance
  ``omega(A) = log(1 + A)`` (``edge_weight="log1p"``, so a hot category does not drown the rest)
  or ``omega(A) = A`` (``"count"``). Only edges with ``A > 0`` take part; a macro node without
  edges gets ``n = 0``. The node's own embedding is kept beside its neighbourhood. The
  attention is dense over all M categories (exact; cost ``O(K B M d_m)`` per batch, which is
  why ``max_categories`` defaults to 1000: measured forward+backward of the attention at B = 256,
  d = 64 on one loaded core: 0.26 s at M = 9500; truncating to the 256 heaviest edges per cluster
  by gather was only 1.5x faster and dropped edges, so M is capped instead).
* **Experts**: the MMoE body of :mod:`ml_core.models.mmoe` over the shared transforms plus every
  task's macro embedding (the gates choose among experts that see all tasks' macro features).
* **Macro task-merging score** (not published): scaled dot product between the task's expert
  mixture ``o^k`` (query, per-task projection ``W^k_q``) and each task's macro embedding ``z^j``
  (key, shared projection ``W_key``); values are the ``z^j`` themselves.
* Loss: the plain sum of the per-task BCEs (the abstract names no extra term).

Configuration: :class:`MGOEConfig`.
Shapes: Batch of B samples -> logits ``[B, K]``. Buffers: ``user_cluster [n_user_ids]`` (int32),
    ``category_slot [cat_size]`` (int32), ``macro_graph [K, C + 1, M]`` (float32 counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ml_core.contracts.spec import ModelSpec
from ml_core.models.base import GraphNeeds, RecModel, check_choice, check_sizes
from ml_core.models.registry import register
from ml_core.nn.dense import FeatureEncoder, MixtureOfExperts, TaskTowers

EDGE_WEIGHTS = ("log1p", "count")


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ initialisation (deterministic given ``seed``).

    Squared distances are ``||x||^2 + ||c||^2 - 2 x.c`` with ``x.c`` one (sparse) product, so a
    sparse ``x`` is never densified. Ties go to the lowest cluster index; a cluster that loses all
    its points keeps its centroid. Fewer distinct points than ``k``: the surplus centroids repeat
    an existing one and stay empty.

    Args:
        x (Tensor): ``[n, D]`` points, dense or sparse COO.
        k (int): clusters.
        seed (int): seed of the k-means++ draws (default: 0).
        iters (int): Lloyd iterations at most (default: 50).
    Returns: (assignment ``[n]`` int64, centroids ``[k, D]`` float64).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = (x if x.is_sparse else x.to_sparse()).coalesce().double()
    n, dim = x.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(k, dim, dtype=torch.float64)
    rows, cols = x.indices()
    vals = x.values()
    sq = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, vals * vals)  # [n] ||x||^2

    def row(j: int) -> torch.Tensor:
        sel = rows == j
        return torch.zeros(dim, dtype=torch.float64).index_put_((cols[sel],), vals[sel], accumulate=True)

    def sq_dist(c: torch.Tensor) -> torch.Tensor:
        return (sq[:, None] + (c * c).sum(1)[None, :] - 2 * torch.sparse.mm(x, c.t())).clamp_min(0)  # [n, k']

    gen = torch.Generator().manual_seed(seed)
    centroids = [row(int(torch.randint(n, (1,), generator=gen)))]
    d2 = sq_dist(centroids[0][None])[:, 0]  # [n] distance to the nearest chosen centroid
    while len(centroids) < k:
        j = int(torch.multinomial(d2, 1, generator=gen)) if float(d2.sum()) > 0 else 0
        centroids.append(row(j))
        d2 = torch.minimum(d2, sq_dist(centroids[-1][None])[:, 0])
    c = torch.stack(centroids)  # [k, D]
    assign = sq_dist(c).argmin(dim=1)  # [n]
    for _ in range(iters):
        sums = torch.zeros(k, dim, dtype=torch.float64).index_put_((assign[rows], cols), vals, accumulate=True)
        counts = torch.bincount(assign, minlength=k).double()  # [k]
        filled = counts > 0
        c = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], c)  # empty clusters keep theirs
        new = sq_dist(c).argmin(dim=1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign, c


class MacroNeighborhood(nn.Module):
    """Edge-weighted bilinear attention of a macro node over its macro-graph neighbours.

    ``out_b = sum_j softmax_j(q_b^T W v_j / sqrt(d) + log omega(w_bj)) v_j`` over the
    neighbours ``j`` with ``w_bj > 0`` (``omega = log1p`` or identity); a row without any gives
    ``0``. One ``W`` per task. Dense over all ``J`` macro nodes of the other side (``J`` is at
    most ``max_categories`` or ``C + 1``).

    Shapes: ``q [K, B, d]``, ``v [K, J, d]``, ``w [K, B, J]`` -> ``[K, B, d]``.
    """

    def __init__(self, n_tasks: int, dim: int, edge_weight: str = "log1p"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_tasks, dim, dim))  # W^k
        self.edge_weight = edge_weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in self.weight:
            nn.init.xavier_uniform_(w)

    def forward(self, q: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        qw = torch.einsum("kbd,kde->kbe", q, self.weight)  # [K, B, d]
        scores = torch.einsum("kbe,kje->kbj", qw, v).float() / math.sqrt(q.shape[-1])  # [K, B, J]
        w = w.float()
        omega = torch.log1p(w) if self.edge_weight == "log1p" else w
        has_edge = w > 0  # [K, B, J]
        any_edge = has_edge.any(dim=-1, keepdim=True)  # [K, B, 1]
        # rows without edges attend uniformly (finite softmax) and are zeroed afterwards
        scores = (scores + torch.log(omega.clamp_min(1e-12))).masked_fill(~(has_edge | ~any_edge), float("-inf"))
        alpha = torch.softmax(scores, dim=-1) * any_edge  # [K, B, J]
        return torch.einsum("kbj,kjd->kbd", alpha.to(v.dtype), v)  # [K, B, d]


@dataclass
class MGOEConfig:
    """MGOE's options (``train.model_args``)."""

    #: item categorical column of the macro item nodes, a name from ``FeatureSpec.item.cats`` or an
    #: index into it; None = ``"category"`` when present, else the first item categorical column
    category: str | int | None = None
    #: user clusters C: MacGNN's default, 20
    n_clusters: int = 20
    #: macro item nodes M at most: 1000, measured (module docstring: cost of the attention at B = 256)
    max_categories: int = 1000
    #: k-means++ seed
    seed: int = 0
    #: Lloyd iterations at most (k-means stops earlier when the assignment is stable)
    kmeans_iters: int = 50
    #: ``omega`` of a macro edge's count: ``log1p`` (MacGNN) or ``count``
    edge_weight: str = "log1p"
    #: d_m; None = ``spec.dim``
    macro_dim: int | None = None
    #: experts N: "4 experts" (MoGE paper section 5.4, as MMoE)
    n_experts: int = 4
    #: expert MLP sizes: "[32, 32]" (MoGE paper section 5.4)
    expert_hidden: list[int] = field(default_factory=lambda: [32, 32])
    #: gate hidden layers; None = linear + softmax, as MMoE
    gate_hidden: list[int] | None = None
    #: in training mode, take the sample's own labels out of its macro edges (no label leak)
    exclude_own_edge: bool = True

    def __post_init__(self) -> None:
        check_sizes(expert_hidden=self.expert_hidden, gate_hidden=self.gate_hidden)
        if self.n_clusters < 1:
            raise ValueError(f"n_clusters must be an int >= 1, got {self.n_clusters!r}")
        if self.max_categories < 2:
            raise ValueError(f"max_categories must be an int >= 2 (slot 0 = unknown), got {self.max_categories!r}")
        if self.kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be >= 1, got {self.kmeans_iters}")
        check_choice("edge_weight", self.edge_weight, EDGE_WEIGHTS)


@register("mgoe", MGOEConfig)
class MGOE(RecModel):
    graph_needs = GraphNeeds.NONE
    warm_start_blocker = ("MGOE re-fits its user clusters (k-means) and category slots on every training window; its "
                          "macro embeddings U^k, I^k are indexed by them, so yesterday's rows mean other clusters today")

    def __init__(self, spec: ModelSpec, config: MGOEConfig | None = None, **args):
        super().__init__()
        cfg = self.config = self.configure(config, args)
        n_clusters, max_categories, edge_weight = cfg.n_clusters, cfg.max_categories, cfg.edge_weight
        self.category_index = self._category_column(spec, cfg.category)
        self.spec = spec
        self.n_clusters = n_clusters
        self.seed = cfg.seed
        self.kmeans_iters = cfg.kmeans_iters
        self.exclude_own_edge = cfg.exclude_own_edge
        K, d = spec.n_tasks, spec.dim
        d_m = cfg.macro_dim or d
        cat_size = spec.item.cat_sizes[self.category_index]
        self.n_macro_items = M = min(cat_size, max_categories)
        # macro state (filled by prepare(), saved in the state_dict)
        self.register_buffer("user_cluster", torch.full((spec.user.n_ids,), n_clusters, dtype=torch.int32))
        codes = torch.arange(cat_size, dtype=torch.int32)
        self.register_buffer("category_slot", torch.where(codes < M, codes, torch.zeros_like(codes)))
        self.register_buffer("macro_graph", torch.zeros(K, n_clusters + 1, M))  # A^k
        # parameters
        self.user_enc = FeatureEncoder(spec.user, d)  # P
        self.item_enc = FeatureEncoder(spec.item, d)  # Q
        self.cluster_emb = nn.Parameter(torch.empty(K, n_clusters + 1, d_m))  # U^k
        self.category_emb = nn.Parameter(torch.empty(K, M, d_m))  # I^k
        self.user_side = MacroNeighborhood(K, d_m, edge_weight)  # W^k_u: categories of the cluster
        self.item_side = MacroNeighborhood(K, d_m, edge_weight)  # W^k_i: clusters of the category
        self.macro_proj = nn.ModuleList(nn.Linear(4 * d_m, d_m) for _ in range(K))  # W^k_z
        history_dim = self.build_history_input(spec)  # r_ui, s(u, i) (0 without either)
        self.moe = MixtureOfExperts(2 * d + K * d_m + history_dim, K, cfg.n_experts, list(cfg.expert_hidden), cfg.gate_hidden)
        self.query = nn.Parameter(torch.empty(K, self.moe.expert_dim, d_m))  # W^k_q
        self.key = nn.Linear(d_m, d_m, bias=False)  # W_key
        self.towers = TaskTowers(self.moe.expert_dim + d_m, K)  # v_k
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.cluster_emb, std=0.05)
        nn.init.normal_(self.category_emb, std=0.05)
        for q in self.query:
            nn.init.xavier_uniform_(q)

    @staticmethod
    def _category_column(spec: ModelSpec, category: str | int | None) -> int:
        names, sizes = list(spec.item.cat_names), spec.item.cat_sizes
        if not sizes:
            raise ValueError("MGOE needs an item categorical column for its macro item nodes, but the item "
                             "features have none (FeatureSpec.item.cats is empty): add a 'category' or 'i_cat_*' column")
        if category is None:
            return names.index("category") if "category" in names else 0
        if isinstance(category, str):
            if category not in names:
                raise ValueError(f"category={category!r} is not an item categorical column; available: "
                                 f"{names or '(names unknown: pass an index)'}")
            return names.index(category)
        if not 0 <= category < len(sizes):
            raise ValueError(f"category index must be in 0..{len(sizes) - 1} (item categorical columns {names}), got {category!r}")
        return category

    # -- macro graph --------------------------------------------------------------------------------
    def prepare(self, contexts) -> None:
        """Trainer hook before step 1: clusters, category slots and the K macro graphs from the
        training days' samples (see the module docstring)."""
        rows, codes, labels = [], [], []
        for ctx in contexts:
            rows.append(ctx.users.ids[torch.from_numpy(ctx.sample_user)])
            codes.append(ctx.items.cats[torch.from_numpy(ctx.sample_item), self.category_index])
            labels.append(torch.from_numpy(ctx.labels))
        self.fit_macro_graph(torch.cat(rows), torch.cat(codes), torch.cat(labels))

    @torch.no_grad()
    def fit_macro_graph(self, user_rows: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the buffers from training samples: ``user_rows [n]`` id-embedding rows,
        ``codes [n]`` category codes (0 = unknown), ``labels [n, K]``."""
        dev = self.macro_graph.device
        user_rows, codes, labels = user_rows.long().cpu(), codes.long().cpu(), labels.float().cpu()
        K, C, M = self.spec.n_tasks, self.n_clusters, self.n_macro_items
        cat_size = self.category_slot.shape[0]
        codes = codes.clamp(0, cat_size - 1)
        slot = torch.arange(cat_size)
        if cat_size > M:  # the M - 1 most frequent known codes get their own slot
            freq = torch.bincount(codes[codes > 0], minlength=cat_size).numpy()
            order = np.lexsort((np.arange(cat_size), -freq))  # by count desc, then code
            top = torch.from_numpy(order[freq[order] > 0][: M - 1].copy())
            slot = torch.zeros(cat_size, dtype=torch.long)
            slot[top] = torch.arange(1, len(top) + 1)
        self.category_slot.copy_(slot.to(torch.int32))
        s = slot[codes]  # [n] macro item node of each sample
        # users x slots positive counts -> k-means on the L2-normalised rows (row 0 = unknown: cold)
        pos = (labels > 0).any(dim=1) & (user_rows > 0)
        users, inv = torch.unique(user_rows[pos], return_inverse=True)
        cluster = torch.full((self.spec.user.n_ids,), C, dtype=torch.long)
        if len(users):
            pair, cnt = torch.unique(inv * M + s[pos], return_counts=True)
            r, c, v = pair // M, pair % M, cnt.double()
            norm = torch.zeros(len(users), dtype=torch.float64).index_add_(0, r, v * v).sqrt()
            x = torch.sparse_coo_tensor(torch.stack([r, c]), v / norm[r], (len(users), M), check_invariants=True)
            assign, _ = kmeans(x, C, seed=self.seed, iters=self.kmeans_iters)
            cluster[users] = assign
        self.user_cluster.copy_(cluster.to(torch.int32))
        # A^k[c, m] = positives of task k between cluster c and slot m; cold row = population profile
        graph = torch.zeros(K, C + 1, M, dtype=torch.float64)
        cu = cluster[user_rows]  # [n]
        for k in range(K):
            yes = labels[:, k] > 0
            graph[k].index_put_((cu[yes], s[yes]), torch.ones(int(yes.sum()), dtype=torch.float64), accumulate=True)
        graph[:, C] = graph[:, :C].sum(dim=1)
        self.macro_graph.copy_(graph.to(dev, torch.float32))

    # -- model --------------------------------------------------------------------------------------
    def macro_nodes(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(cluster ``c(u)`` ``[B]``, category slot ``slot(i)`` ``[B]``); cold users get ``C``."""
        c = self.user_cluster[batch.user.ids].long()  # [B]
        m = self.category_slot[batch.item.cats[:, self.category_index].clamp(0, self.category_slot.shape[0] - 1)].long()  # [B]
        return c, m

    def macro_edges(self, batch, c: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge weights around each sample's macro nodes: ``A^k[c_b, :]`` ``[K, B, M]`` and
        ``A^k[:, m_b]`` ``[K, B, C+1]``. In training mode with ``exclude_own_edge`` the sample's own
        labels are taken out of the edge ``(c_b, m_b)`` (and of the cold row, which sums every
        cluster): every training sample was counted once in ``A``, and its own label must not be
        an input of its prediction."""
        w_c = self.macro_graph[:, c, :]  # [K, B, M]
        w_m = self.macro_graph[:, :, m].transpose(1, 2)  # [K, B, C+1]
        if self.training and self.exclude_own_edge:
            y = batch.labels.t().to(w_c.dtype)  # [K, B]
            k = torch.arange(y.shape[0], device=c.device)[:, None]  # [K, 1]
            b = torch.arange(len(c), device=c.device)[None]  # [1, B]
            cold = torch.full_like(c, self.n_clusters)
            w_c = w_c.index_put((k, b, m[None]), -y, accumulate=True)
            w_m = w_m.index_put((k, b, c[None]), -y, accumulate=True)
            w_m = w_m.index_put((k, b, cold[None]), -y * (c != cold).to(y.dtype), accumulate=True)
            w_c, w_m = w_c.clamp_min(0), w_m.clamp_min(0)
        return w_c, w_m

    def macro_embeddings(self, batch) -> torch.Tensor:
        """Macro Graph Bottom: ``z^k`` of every task, ``[K, B, d_m]``."""
        c, m = self.macro_nodes(batch)  # [B], [B]
        U, I = self.cluster_emb, self.category_emb  # [K, C+1, d_m], [K, M, d_m]
        e_c, e_m = U[:, c], I[:, m]  # [K, B, d_m] each
        w_c, w_m = self.macro_edges(batch, c, m)  # [K, B, M], [K, B, C+1]
        n_c = self.user_side(e_m, I, w_c)  # [K, B, d_m]: categories around c, queried by i's
        n_m = self.item_side(e_c, U, w_m)  # [K, B, d_m]: clusters around m, queried by u's
        h = torch.cat([e_c, n_c, e_m, n_m], dim=-1)  # [K, B, 4 d_m]
        return torch.stack([proj(h[k]) for k, proj in enumerate(self.macro_proj)])  # [K, B, d_m]

    def forward(self, batch) -> torch.Tensor:
        z = self.macro_embeddings(batch)  # [K, B, d_m]
        K, B, d_m = z.shape
        x = torch.cat([self.user_enc(batch.user), self.item_enc(batch.item), z.transpose(0, 1).reshape(B, K * d_m)], dim=-1)  # x^ [B, 2d + K d_m]
        x = self.with_history(x, batch)  # [B, 2d + K d_m (+ d)]
        o, _, _ = self.moe(x)  # o^k: [K, B, d_e]
        # Macro Prediction Tower: task k's mixture queries every task's macro embedding
        q = torch.einsum("kbe,kem->kbm", o, self.query)  # [K, B, d_m]
        keys = self.key(z)  # [J=K, B, d_m]
        gamma = torch.softmax(torch.einsum("kbm,jbm->kbj", q, keys) / math.sqrt(d_m), dim=-1)  # [K, B, J]
        merged = torch.einsum("kbj,jbm->kbm", gamma, z)  # [K, B, d_m]
        return self.towers(torch.cat([o, merged], dim=-1))  # [B, K]
