"""Mesh topologies: line, grid, random geometric, tree, or from a JSON file.

A :class:`Topology` is nodes with positions and an undirected neighbour list, each link with its
own loss probability. ``submesh[i]`` says which sub-mesh (own root) node ``i`` belongs to; links
between sub-meshes exist on air (they share the channel) but routing stays inside a sub-mesh.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Topology", "TopologyError", "build_topology"]


class TopologyError(ValueError):
    """A topology description that cannot be built (bad kind, size, file)."""


@dataclass
class Topology:
    kind: str
    positions: list[tuple[float, float]]
    adjacency: list[list[tuple[int, float]]]  # node -> [(neighbour, loss)]
    submesh: list[int] = field(default_factory=list)
    _loss: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.positions)

    def loss(self, a: int, b: int) -> float:
        return self._loss[(a, b) if a < b else (b, a)]

    def links(self) -> list[tuple[int, int, float]]:
        return [(a, b, p) for (a, b), p in sorted(self._loss.items())]

    @classmethod
    def from_links(
        cls,
        kind: str,
        positions: list[tuple[float, float]],
        links: list[tuple[int, int, float]],
        submesh: list[int] | None = None,
    ) -> Topology:
        n = len(positions)
        adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        loss: dict[tuple[int, int], float] = {}
        for a, b, p in links:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise TopologyError(f"link {a}-{b} does not join two of the {n} nodes")
            if not 0.0 <= p < 1.0:
                raise TopologyError(f"link {a}-{b} loss {p} is not in [0, 1)")
            key = (a, b) if a < b else (b, a)
            if key in loss:
                continue
            loss[key] = p
            adj[a].append((b, p))
            adj[b].append((a, p))
        for lst in adj:
            lst.sort()
        return cls(kind, positions, adj, submesh or [0] * n, loss)


def _loss_draw(rng: random.Random, loss: float | tuple[float, float]) -> float:
    if isinstance(loss, tuple):
        return rng.uniform(*loss)
    return loss


def line(n: int, loss: float | tuple[float, float], rng: random.Random) -> Topology:
    pos = [(float(i), 0.0) for i in range(n)]
    return Topology.from_links("line", pos, [(i, i + 1, _loss_draw(rng, loss)) for i in range(n - 1)])


def grid(n: int, loss: float | tuple[float, float], rng: random.Random, cols: int = 0) -> Topology:
    cols = cols or max(1, math.isqrt(n))
    pos = [(float(i % cols), float(i // cols)) for i in range(n)]
    links = []
    for i in range(n):
        if (i + 1) % cols and i + 1 < n:
            links.append((i, i + 1, _loss_draw(rng, loss)))
        if i + cols < n:
            links.append((i, i + cols, _loss_draw(rng, loss)))
    return Topology.from_links("grid", pos, links)


def tree(n: int, loss: float | tuple[float, float], rng: random.Random, fanout: int = 3) -> Topology:
    """A ``fanout``-ary tree in breadth-first order (node 0 is the natural root)."""
    pos: list[tuple[float, float]] = []
    depth_of = [0] * n
    for i in range(1, n):
        depth_of[i] = depth_of[(i - 1) // fanout] + 1
    count_at: dict[int, int] = {}
    for i in range(n):
        k = count_at.get(depth_of[i], 0)
        count_at[depth_of[i]] = k + 1
        pos.append((float(k), -float(depth_of[i])))
    width = {d: c for d, c in count_at.items()}
    pos = [((x + 0.5) / width[int(-y)] * 10.0, y) for x, y in pos]
    return Topology.from_links(
        "tree", pos, [(i, (i - 1) // fanout, _loss_draw(rng, loss)) for i in range(1, n)]
    )


def random_geometric(
    n: int, loss: float | tuple[float, float], rng: random.Random, degree: float = 8.0
) -> Topology:
    """Nodes uniform in a square sized so the mean degree is about ``degree``; joined within range.

    Loss grows with distance: a link at full range has twice the configured loss of a close one.
    Isolated groups are joined to their nearest node (a mesh is deployed so every node hears one).
    """
    side = math.sqrt(n * math.pi / max(degree, 1.0))
    radius = 1.0
    pos = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(n)]
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(pos):
        cells.setdefault((int(x), int(y)), []).append(i)
    links: list[tuple[int, int, float]] = []
    for i, (x, y) in enumerate(pos):
        cx, cy = int(x), int(y)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cells.get((cx + dx, cy + dy), ()):
                    if j > i:
                        d = math.dist(pos[i], pos[j])
                        if d <= radius:
                            base = _loss_draw(rng, loss)
                            links.append((i, j, min(0.95, base * (0.5 + d / radius))))
    topo = Topology.from_links("random", pos, links)
    _join_components(topo, loss, rng)
    return topo


def _join_components(topo: Topology, loss: float | tuple[float, float], rng: random.Random) -> None:
    comp = [-1] * topo.n
    comps: list[list[int]] = []
    for s in range(topo.n):
        if comp[s] >= 0:
            continue
        comp[s] = len(comps)
        members, stack = [s], [s]
        while stack:
            u = stack.pop()
            for v, _ in topo.adjacency[u]:
                if comp[v] < 0:
                    comp[v] = comp[s]
                    members.append(v)
                    stack.append(v)
        comps.append(members)
    main = max(range(len(comps)), key=lambda c: len(comps[c]))
    for c, members in enumerate(comps):
        if c == main:
            continue
        a, b = min(
            ((a, b) for a in members for b in comps[main]),
            key=lambda ab: math.dist(topo.positions[ab[0]], topo.positions[ab[1]]),
        )
        p = _loss_draw(rng, loss)
        key = (a, b) if a < b else (b, a)
        topo._loss[key] = p
        topo.adjacency[a].append((b, p))
        topo.adjacency[b].append((a, p))
        comps[main].extend(members)


def from_file(path: Path) -> Topology:
    """JSON: ``{"nodes": [[x, y], ...], "links": [[a, b, loss?], ...], "submesh": [k, ...]?}``."""
    try:
        doc = json.loads(path.read_text())
        pos = [(float(x), float(y)) for x, y in doc["nodes"]]
        links = [(int(lk[0]), int(lk[1]), float(lk[2]) if len(lk) > 2 else 0.0) for lk in doc["links"]]
        sub = [int(s) for s in doc.get("submesh", [0] * len(pos))]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TopologyError(f"{path}: not a topology file ({exc})") from None
    if len(sub) != len(pos):
        raise TopologyError(f"{path}: submesh has {len(sub)} entries for {len(pos)} nodes")
    return Topology.from_links("file", pos, links, sub)


def assign_submeshes(topo: Topology, count: int) -> None:
    """Split the nodes into ``count`` sub-meshes around evenly spread seeds (nearest seed wins)."""
    if count <= 1:
        topo.submesh = [0] * topo.n
        return
    order = sorted(range(topo.n), key=lambda i: topo.positions[i])
    seeds = [order[(2 * k + 1) * topo.n // (2 * count)] for k in range(count)]
    topo.submesh = [
        min(range(count), key=lambda k: (math.dist(topo.positions[i], topo.positions[seeds[k]]), k))
        for i in range(topo.n)
    ]


def build_topology(
    kind: str,
    n: int,
    loss: float | tuple[float, float],
    rng: random.Random,
    *,
    fanout: int = 3,
    degree: float = 8.0,
    cols: int = 0,
    file: Path | None = None,
    submeshes: int = 1,
) -> Topology:
    if kind == "file":
        if file is None:
            raise TopologyError("topology kind 'file' needs a file")
        topo = from_file(file)
        if submeshes > 1:
            assign_submeshes(topo, submeshes)
        return topo
    if n < 2:
        raise TopologyError(f"a mesh needs at least 2 nodes, got {n}")
    if kind == "line":
        topo = line(n, loss, rng)
    elif kind == "grid":
        topo = grid(n, loss, rng, cols)
    elif kind == "tree":
        topo = tree(n, loss, rng, fanout)
    elif kind == "random":
        topo = random_geometric(n, loss, rng, degree)
    else:
        raise TopologyError(f"unknown topology kind {kind!r} (line, grid, tree, random, file)")
    assign_submeshes(topo, submeshes)
    return topo
