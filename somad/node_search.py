"""The k nearest SOM nodes of each patch (Eq. 1 of SOMAD, ``argmin_k ||f - m_k||^2``), found without a
full-dimensional distance to every node.

With ``P`` the projection onto the ``r`` leading principal directions of the node weights,

    ||f - m_k||^2 = ||P (f - m_k)||^2 + ||(I - P)(f - m_k)||^2

and the first term, at ``r / d`` of the cost, ranks the nodes: the ``c`` best by it are the candidates, whose
exact distances choose the k nearest. This departs from Eq. 1 only where a node among the true k nearest
ranks below ``c`` in the projection (measured in BENCHMARKS.md, "Searching the nodes"); with ``r = 0`` or
``c`` at least the number of nodes, every node is a candidate and the search is exact.

Queries go in blocks whose (rows, nodes) distance matrix holds about :data:`BLOCK_ELEMENTS` values, so that
it stays in the processor's cache: written to memory and read back, that matrix, not the arithmetic, bounded
the search.

Among the ``k + RERANKED`` best candidates, the final choice is made on distances recomputed in float64: the
float32 products sum in an order that depends on the library and the batch, so nodes at nearly equal
distances could swap between the Python path and an exported graph.
"""

from __future__ import annotations

import torch

#: Candidates beyond k whose distances are recomputed in float64 before the k nearest are chosen.
RERANKED = 2
#: Distances per block of the search: about 2 MB of float32.
BLOCK_ELEMENTS = 1 << 19


def rerank(x: torch.Tensor, weights: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """The k nearest among each row's ``candidates`` (n, c) by squared distances recomputed in float64."""
    diff = x.unsqueeze(1).double() - weights[candidates].double()
    order = torch.topk((diff * diff).sum(-1), k, dim=1, largest=False).indices
    return candidates.gather(1, order)


class NodeSearch(torch.nn.Module):
    """The k nearest of ``weights`` (N, d) for each query: ``dims`` principal directions rank the nodes, the
    ``candidates`` best by them get exact distances (module doc). ``dims = 0`` searches every node exactly.

    A pure torch module: :meth:`forward` is what an exported scoring graph runs; :meth:`nearest` runs it block
    by block and adds the exact squared distances of the nodes found.
    """

    def __init__(self, weights: torch.Tensor, dims: int = 0, candidates: int = 0):
        super().__init__()
        weights = weights.detach().float().contiguous()
        n_nodes, d = weights.shape
        self.exhaustive = dims <= 0 or dims >= d or candidates >= n_nodes or candidates < 1
        self.candidates = n_nodes if self.exhaustive else candidates
        self.register_buffer("weights", weights)
        self.register_buffer("squared", (weights * weights).sum(1))
        unused = weights.new_zeros(0)
        centre = basis = projected = unused
        if not self.exhaustive:
            centre = weights.mean(0)
            # principal directions in float64: the same basis whatever the library's float32 blocking
            _, _, vh = torch.linalg.svd((weights - centre).double(), full_matrices=False)
            basis = vh[:dims].T.float().contiguous()
            projected = ((weights - centre) @ basis).contiguous()
        self.register_buffer("centre", centre)
        self.register_buffer("basis", basis)
        self.register_buffer("projected", projected)
        self.register_buffer("projected_squared", (projected * projected).sum(-1))

    @property
    def n_nodes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def block(self) -> int:
        """Query rows per block (module doc)."""
        return max(32, min(8192, BLOCK_ELEMENTS // self.n_nodes))

    def shifted(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The candidates (n, c) of each row of ``x`` and their ``||m||^2 - 2 x.m`` (n, c), the squared distance
        less the row's constant ``||x||^2``; candidates ``None``: every node, in order."""
        if self.exhaustive:
            return None, torch.addmm(self.squared, x, self.weights.T, alpha=-2.0)
        q = (x - self.centre) @ self.basis
        coarse = torch.addmm(self.projected_squared, q, self.projected.T, alpha=-2.0)
        wide = torch.topk(coarse, self.candidates, dim=1, largest=False).indices
        return wide, self.squared[wide] - 2.0 * torch.einsum("ncd,nd->nc", self.weights[wide], x)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (n, k) of the k nearest nodes of each row of ``x`` (n, d), nearest first."""
        k = min(k, self.n_nodes)
        wide, shifted = self.shifted(x)
        order = torch.topk(shifted, min(k + RERANKED, shifted.shape[1]), dim=1, largest=False).indices
        candidates = order if wide is None else wide.gather(1, order)
        return rerank(x, self.weights, candidates, k)

    def _blocks(self, x: torch.Tensor):
        for start in range(0, x.shape[0], self.block):
            yield x[start : start + self.block].to(self.weights.device, torch.float32)

    @torch.inference_mode()
    def indices(self, x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """:meth:`forward` block by block: indices (n, k) of the k nearest nodes, nearest first."""
        k = min(k, self.n_nodes)
        found = [self.forward(block, k) for block in self._blocks(x)]
        return torch.cat(found) if found else torch.zeros(0, k, dtype=torch.long, device=self.weights.device)

    @torch.inference_mode()
    def nearest(self, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (n, k) of the k nearest nodes, nearest first, and their squared distances (n, k)."""
        idx = self.indices(x, k)
        diff = x.to(self.weights.device, torch.float32).unsqueeze(1) - self.weights[idx]
        return idx, (diff * diff).sum(-1)

    @torch.inference_mode()
    def best(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest node (n,) of each row of ``x`` and its squared distance (n,), in float32 throughout:
        the best-matching units of the SOM's training, where a near tie may go either way."""
        best, squared = [], []
        for block in self._blocks(x):
            wide, shifted = self.shifted(block)
            value, pick = shifted.min(1)
            best.append(pick if wide is None else wide.gather(1, pick.unsqueeze(1)).squeeze(1))
            squared.append((value + (block * block).sum(1)).clamp_min_(0.0))
        return torch.cat(best), torch.cat(squared)
