"""Options of the Self-Organizing Map (a section of :class:`somad.config.SomadConfig`): its size (fixed, or sized
to the training patches), the patches it learns (aggregated windows) and Kohonen's batch training schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from somad.errors import ConfigError
from somad.option_doc import option_doc as _doc

SomInit = Literal["positional", "pca", "random"]

#: Auto SOM size: training patches a node's Gaussian should rest on, and the bounds of the map's side.
HITS_PER_NODE = 25
MIN_AUTO_SIDE = 8
MAX_AUTO_SIDE = 80


@dataclass(frozen=True)
class SomConfig:
    """Batch Self-Organizing Map options (Kohonen's batch algorithm, Gaussian neighbourhood).

    The neighbourhood radius decays exponentially from ``sigma_start`` (default: a quarter of the map side)
    to ``sigma_end`` over ``epochs`` full passes over the training patches.
    """

    rows: int = field(
        default=0,
        metadata=_doc(
            "SOM rows",
            "Rows of the Self-Organizing Map grid; Auto (0): sized to the training patches, about\n"
            f"{HITS_PER_NODE} a node, from {MIN_AUTO_SIDE} to {MAX_AUTO_SIDE} a side (the paper: 56).",
            "SOM",
            "int",
            0,
            512,
            special="Auto",
        ),
    )
    cols: int = field(
        default=0,
        metadata=_doc(
            "SOM cols",
            "Columns of the Self-Organizing Map grid; Auto (0): as rows.",
            "SOM",
            "int",
            0,
            512,
            special="Auto",
        ),
    )
    epochs: int = field(
        default=10,
        metadata=_doc(
            "Epochs",
            "Full passes of the batch SOM algorithm over the training patches.",
            "SOM",
            "int",
            1,
            1000,
            flag="--epochs",
        ),
    )
    sigma_start: float | None = field(
        default=None,
        metadata=_doc(
            "Neighbourhood σ start",
            "Initial Gaussian neighbourhood radius in nodes; Auto: a quarter of the map side.",
            "SOM",
            "optional_float",
            0.0,
            1000.0,
            0.5,
            2,
            special="Auto",
            flag="--sigma-start",
        ),
    )
    sigma_end: float = field(
        default=0.5,
        metadata=_doc(
            "Neighbourhood σ end",
            "Final neighbourhood radius in nodes, reached at the last epoch.",
            "SOM",
            "float",
            0.01,
            1000.0,
            0.1,
            2,
            flag="--sigma-end",
        ),
    )
    init: SomInit = field(
        default="positional",
        metadata=_doc(
            "Initialisation",
            "positional: every node starts at the mean of the training patches at its grid position (paper);\n"
            "pca: on the plane of the first two principal components; random: random training patches.",
            "SOM",
            "choice",
            choices=("positional", "pca", "random"),
            flag="--som-init",
        ),
    )
    patch_window: int = field(
        default=3,
        metadata=_doc(
            "Patch window",
            "Each patch feature is the mean over its window x window grid neighbours before the map learns\n"
            "it (PatchCore's local aggregation): a patch carries its neighbourhood. 1: the patch alone.",
            "SOM",
            "int",
            1,
            9,
            2,
            flag="--patch-window",
        ),
    )
    patch_stride: int = field(
        default=2,
        metadata=_doc(
            "Patch stride",
            "Grid cells between two aggregated patches (2: stride 8 px at the finest stage, a quarter\n"
            "of the patches). 1: every cell.",
            "SOM",
            "int",
            1,
            4,
            flag="--patch-stride",
        ),
    )
    samples_per_epoch: int = field(
        default=100_000,
        metadata=_doc(
            "Patches per epoch",
            "Training patches drawn afresh for each SOM epoch (0: every patch, every epoch). Every patch is\n"
            "still assigned to its node with the final map, for the node statistics.",
            "SOM",
            "int",
            0,
            100_000_000,
            10_000,
            flag="--som-samples",
        ),
    )
    min_epoch_share: float = field(
        default=0.3,
        metadata=_doc(
            "Least share per epoch",
            "Epochs with a wide neighbourhood σ draw fewer patches, (2 σ end / σ)² of the patches per epoch,\n"
            "at least this share of them (1: every epoch draws them all).",
            "SOM",
            "float",
            0.01,
            1.0,
            0.05,
            2,
            form=False,
        ),
    )
    search_dims: int = field(
        default=0,
        metadata=_doc(
            "Search dimensions",
            "Principal directions of the nodes in which every node's distance is measured to find a patch's\n"
            "nearest nodes; the best candidates then get exact distances (0: exact distances to every node).",
            "SOM",
            "int",
            0,
            4096,
            flag="--search-dims",
            form=False,
        ),
    )
    candidates: int = field(
        default=8,
        metadata=_doc(
            "Search candidates",
            "Nodes nearest in the search dimensions whose exact distances choose a patch's nearest nodes.",
            "SOM",
            "int",
            1,
            4096,
            flag="--search-candidates",
            form=False,
        ),
    )
    seed: int = 0
    chunk_size: int = 8192

    def validate(self) -> None:
        if self.samples_per_epoch < 0:
            raise ConfigError(f"samples_per_epoch: expected 0 (all) or more, got {self.samples_per_epoch}")
        if self.patch_window < 1 or self.patch_window % 2 == 0 or self.patch_stride < 1:
            raise ConfigError(
                f"patch window and stride: expected an odd window and a stride from 1, got "
                f"{self.patch_window} and {self.patch_stride}"
            )
        if not self.auto_size and (self.rows < 1 or self.cols < 1 or self.rows * self.cols < 2):
            raise ConfigError(
                f"SOM size: expected at least 2 nodes, or 0 x 0 for Auto, got {self.rows} x {self.cols}"
            )
        if self.epochs < 1:
            raise ConfigError(f"epochs: expected at least 1 full pass, got {self.epochs}")
        if self.sigma_end <= 0 or (self.sigma_start is not None and self.sigma_start < self.sigma_end):
            raise ConfigError("sigma: expected 0 < sigma_end <= sigma_start")
        if self.init not in ("positional", "pca", "random"):
            raise ConfigError(f"init: expected positional, pca or random, got {self.init!r}")
        if not 0 < self.min_epoch_share <= 1:
            raise ConfigError(
                f"min_epoch_share: expected a share above 0, at most 1, got {self.min_epoch_share}"
            )
        if self.search_dims < 0 or self.candidates < 1:
            raise ConfigError(
                f"search: expected 0 or more dimensions and at least 1 candidate, got {self.search_dims} and "
                f"{self.candidates}"
            )
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size: expected at least 1, got {self.chunk_size}")

    @property
    def auto_size(self) -> bool:
        """Whether the map is sized to the training patches when fitted (rows and cols 0)."""
        return self.rows == 0 and self.cols == 0

    def sized_for(self, n_patches: int) -> SomConfig:
        """This configuration with an Auto map sized for ``n_patches`` training patches: a square of side
        ``round(sqrt(n_patches / HITS_PER_NODE))`` within [MIN_AUTO_SIDE, MAX_AUTO_SIDE], so that each node's
        Gaussian (Eq. 2) rests on about HITS_PER_NODE patches; an explicit size is kept."""
        if not self.auto_size:
            return self
        side = round(math.sqrt(max(n_patches, 1) / HITS_PER_NODE))
        side = min(max(side, MIN_AUTO_SIDE), MAX_AUTO_SIDE)
        return replace(self, rows=side, cols=side)

    @property
    def initial_sigma(self) -> float:
        return self.sigma_start if self.sigma_start is not None else max(max(self.rows, self.cols) / 4.0, 1.0)
