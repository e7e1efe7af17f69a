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
        if self.exhaustive:
            centre, basis = torch.zeros(d), torch.eye(d)
        else:
            centre = weights.mean(0)
            # principal directions in float64: the same basis whatever the library's float32 blocking
            _, _, vh = torch.linalg.svd((weights - centre).double(), full_matrices=False)
            basis = vh[:dims].T.float().contiguous()
        projected = (weights - centre) @ basis
        self.register_buffer("centre", centre.to(weights.device))
        self.register_buffer("basis", basis.to(weights.device))
        self.register_buffer("projected", projected.contiguous())
        self.register_buffer("projected_squared", (projected * projected).sum(1))

    @property
    def n_nodes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def block(self) -> int:
        """Query rows per block (module doc)."""
        return max(32, min(8192, BLOCK_ELEMENTS // self.n_nodes))

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (n, k) of the k nearest nodes of each row of ``x`` (n, d), nearest first."""
        k = min(k, self.n_nodes)
        if self.exhaustive:
            shifted = torch.addmm(self.squared, x, self.weights.T, alpha=-2.0)
            candidates = torch.topk(shifted, min(k + RERANKED, self.n_nodes), dim=1, largest=False).indices
        else:
            q = (x - self.centre) @ self.basis
            coarse = torch.addmm(self.projected_squared, q, self.projected.T, alpha=-2.0)
            wide = torch.topk(coarse, self.candidates, dim=1, largest=False).indices  # (n, c)
            near = self.weights[wide]  # (n, c, d)
            shifted = self.squared[wide] - 2.0 * torch.einsum("ncd,nd->nc", near, x)
            order = torch.topk(shifted, min(k + RERANKED, self.candidates), dim=1, largest=False).indices
            candidates = wide.gather(1, order)
        return rerank(x, self.weights, candidates, k)

    @torch.inference_mode()
    def nearest(self, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (n, k) of the k nearest nodes, nearest first, and their squared distances (n, k)."""
        k = min(k, self.n_nodes)
        found, squared = [], []
        for start in range(0, x.shape[0], self.block):
            block = x[start : start + self.block].to(self.weights.device, torch.float32)
            idx = self.forward(block, k)
            diff = block.unsqueeze(1) - self.weights[idx]
            found.append(idx)
            squared.append((diff * diff).sum(-1))
        if not found:
            empty = torch.zeros(0, k, device=self.weights.device)
            return empty.long(), empty
        return torch.cat(found), torch.cat(squared)

    @torch.inference_mode()
    def best(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest node (n,) of each row of ``x`` and its squared distance (n,), in float32 throughout:
        the best-matching units of the SOM's training, where a near tie may go either way."""
        best, squared = [], []
        for start in range(0, x.shape[0], self.block):
            block = x[start : start + self.block].to(self.weights.device, torch.float32)
            if self.exhaustive:
                shifted, idx = torch.addmm(self.squared, block, self.weights.T, alpha=-2.0).min(1)
            else:
                q = (block - self.centre) @ self.basis
                coarse = torch.addmm(self.projected_squared, q, self.projected.T, alpha=-2.0)
                wide = torch.topk(coarse, self.candidates, dim=1, largest=False).indices
                exact = self.squared[wide] - 2.0 * torch.einsum("ncd,nd->nc", self.weights[wide], block)
                shifted, pick = exact.min(1)
                idx = wide.gather(1, pick.unsqueeze(1)).squeeze(1)
            best.append(idx)
            squared.append((shifted + (block * block).sum(1)).clamp_min_(0.0))
        return torch.cat(best), torch.cat(squared)
