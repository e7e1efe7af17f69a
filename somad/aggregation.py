"""Local aggregation of patch features (PatchCore, Roth et al. 2022, Section 3.1): each patch feature becomes the
mean of its ``window`` x ``window`` grid neighbours, taken every ``stride`` cells, so a patch carries its local
neighbourhood and the grid is coarser. Used by SOMAD's map (``som.patch_window``, ``som.patch_stride``) and by
PatchCore's memory bank (its ``neighbourhood`` and ``stride`` options).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def aggregate(patches: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """(N, gh, gw, d) -> (N, ceil(gh / stride), ceil(gw / stride), d): the mean over each window, borders
    averaging only the cells inside the grid; the input itself when window and stride are 1."""
    if window <= 1 and stride <= 1:
        return patches
    x = patches.permute(0, 3, 1, 2)
    x = F.avg_pool2d(x, window, stride=stride, padding=window // 2, count_include_pad=False)
    return x.permute(0, 2, 3, 1).contiguous()
