"""Device choice, thread caps, seeding and progress bars.

Every chapter calls :func:`setup` once; the training helpers call
:func:`pick_device` and :func:`progress`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def pick_device(preference: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives CUDA when present, else the CPU; ``"cpu"``/``"cuda"`` (or a ``torch.device``) force one."""
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference not in ("cpu", "cuda") and not preference.startswith("cuda:"):
        raise ValueError(f"unknown device {preference!r}; use 'auto', 'cpu' or 'cuda'")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(preference)


def thread_count() -> int:
    """Threads to use: ``OMP_NUM_THREADS`` when set (the book runner sets it), else the core count."""
    env = os.environ.get("OMP_NUM_THREADS")
    cores = os.cpu_count() or 1
    return max(1, min(int(env), cores)) if env and env.isdigit() else cores


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, max_threads: int | None = None) -> torch.device:
    """Cap torch threads at :func:`thread_count` (and ``max_threads``), seed everything, return the device.

    Small networks (widths of tens) run fastest on one thread: pass ``max_threads=1`` there.
    """
    torch.set_num_threads(min(thread_count(), max_threads or thread_count()))
    seed_everything(seed)
    return pick_device("auto")


def progress_enabled() -> bool:
    """Progress bars are on unless ``NRC_PROGRESS=0`` (the book runner sets it, so no bar is published)."""
    return os.environ.get("NRC_PROGRESS", "1") != "0"


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", enabled: bool | None = None) -> Iterator[T]:
    """A tqdm progress bar (notebook widget or terminal), silent when :func:`progress_enabled` is false."""
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, leave=False))
