"""The ideal throughput when the roles share their nodes' GPUs by time (``--gpu-sharing time``).

With static shares (``partition``) each role's capacity is its own (latency.ideal_throughput). With time
sharing a role's capacity depends on who else is on its GPU, so the role bound becomes a small linear
programme over the placement Ray chose:

    maximise X  subject to
      Σ_n y[r, n] = X                      for every role r           (every image visits every role)
      Σ_r y[r, n] · w[r] ≤ G[n]            for every GPU node n       (the node's GPU-seconds per second)
      y[r, n] · w[r] ≤ m[r, n]             for every role r, node n   (m replicas cannot use more than m GPUs)
      y[r, n] ≥ 0, and 0 where r has no replica on n

where w[r] is role r's whole-GPU busy seconds per image at its best batching (the same per-item costs as the
partition ideal, at share 1) and y[r, n] the images per second of r served on n. Routing may split a role's
load over its replicas in any proportion, so this is an upper bound whatever the router does. The binding
constraints (those with a nonzero dual value) name the bound: the roles on a saturated node, or a role whose
replicas are all saturated.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class SharedBound:
    images_per_s: float
    bound: str  # "+".join of the roles on the binding node(s) or role(s)
    node_load: dict  # node id -> GPU-seconds per second used at the bound (of G)
    split: dict  # role -> {node id: share of the role's images served there}

    def as_dict(self) -> dict:
        return asdict(self)


def time_shared_bound(work_s: dict[str, float], replicas_on: dict[str, dict[str, int]],
                      gpus: dict[str, float]) -> SharedBound:
    """``work_s``: role -> whole-GPU seconds per image; ``replicas_on``: role -> {node id: replicas there};
    ``gpus``: node id -> GPUs. Roles with no work are left out."""
    from scipy.optimize import linprog

    roles = [r for r in work_s if work_s[r] > 0]
    for r in roles:
        missing = [n for n in replicas_on.get(r, {}) if gpus.get(n, 0) <= 0]
        if missing or not replicas_on.get(r):
            raise ValueError(f"{r}: replicas on nodes without a GPU ({missing}) or none placed")
    pairs = [(r, n) for r in roles for n in sorted(replicas_on[r])]
    nodes = sorted({n for _, n in pairs})
    nvar = len(pairs) + 1  # y[r, n]..., X last
    c = [0.0] * len(pairs) + [-1.0]
    a_eq, b_eq = [], []
    for r in roles:
        row = [1.0 if pr == r else 0.0 for pr, _ in pairs] + [-1.0]
        a_eq.append(row)
        b_eq.append(0.0)
    a_ub, b_ub, labels = [], [], []
    for n in nodes:
        a_ub.append([work_s[pr] if pn == n else 0.0 for pr, pn in pairs] + [0.0])
        b_ub.append(gpus[n])
        labels.append(("node", n))
    for i, (r, n) in enumerate(pairs):
        row = [0.0] * nvar
        row[i] = work_s[r]
        a_ub.append(row)
        b_ub.append(float(replicas_on[r][n]))
        labels.append(("replicas", r))
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * nvar, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the time-shared ideal's linear programme failed: {res.message}")
    x = res.x[-1]
    y = dict(zip(pairs, res.x[:-1]))
    # Binding = a constraint whose relaxation would raise X (a nonzero dual value), not merely one with no
    # slack: with a role on several nodes the optimum can fill one node although moving load elsewhere is free.
    binding = set()
    for (kind, what), marginal in zip(labels, res.ineqlin.marginals):
        if abs(marginal) <= 1e-9:
            continue
        if kind == "node":
            binding |= {pr for pr, pn in pairs if pn == what and y[(pr, pn)] > 1e-9}
        else:
            binding.add(what)
    node_load = {n: round(sum(work_s[pr] * y[(pr, pn)] for pr, pn in pairs if pn == n), 6) for n in nodes}
    split = {r: {n: round(y[(pr, n)] / x, 4) if x > 0 else 0.0 for pr, n in pairs if pr == r} for r in roles}
    return SharedBound(x if math.isfinite(x) else math.inf, "+".join(sorted(binding)) or "none", node_load, split)
