"""Device selection: ``auto`` means the first CUDA device when there is one, else the CPU."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from somad.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable :class:`torch.device`."""
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: unknown device {name!r} (use auto, cpu or cuda[:N])") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} does not exist ({torch.cuda.device_count()} CUDA device(s))")
    elif device.type != "cpu":
        raise ConfigError(f"device: {name!r} is not supported (use auto, cpu or cuda[:N])")
    return device


def available_devices() -> list[tuple[str, str]]:
    """``(id, description)`` of every usable device, ``auto`` first; CUDA entries name the GPU."""
    cpu = f"CPU ({torch.get_num_threads()} threads of {os.cpu_count()} cores)"
    gpus = (
        [
            (f"cuda:{i}", f"{torch.cuda.get_device_name(i)} (cuda:{i})")
            for i in range(torch.cuda.device_count())
        ]
        if torch.cuda.is_available()
        else []
    )
    auto = f"Auto ({gpus[0][1] if gpus else 'CPU'})"
    return [("auto", auto), ("cpu", cpu), *gpus]


def device_name(device: torch.device) -> str:
    """A human-readable name of ``device`` for reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


@contextmanager
def single_threaded(device: torch.device):
    """Run a loop of many small CPU tensor operations on one intra-op thread.

    Each small operation would otherwise open an OpenMP parallel region whose barrier costs more than the
    work; on a busy machine that made per-node loops ten times slower. GPU work is left untouched.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
