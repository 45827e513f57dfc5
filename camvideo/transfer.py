"""Reading device tensors back to the host: one wait per batch, never an implicit one.

On a GPU, ``tensor.cpu()`` and ``tensor.tolist()`` each copy into fresh pageable memory
and make the host wait, and ``float(tensor)`` or indexing with a 0-dim tensor waits too.
:func:`to_host` instead copies every tensor a batch needs into page-locked (pinned)
memory, asynchronously on the current stream, and waits once on an event; the pinned
blocks come from torch's caching host allocator, which reuses them once the arrays made
from them are gone. On the CPU it returns the tensors' own memory, without copying.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["to_host"]


def to_host(tensors: Sequence[Tensor]) -> list[np.ndarray]:
    """The tensors as numpy arrays on the host, in order.

    Args:
        tensors: tensors on one device (any shapes and dtypes numpy has).

    Returns:
        One array per tensor: views of the tensors on the CPU; on a GPU, views of pinned
        copies made with one asynchronous copy each and a single wait for all of them.
    """
    if not tensors:
        return []
    dev = tensors[0].device
    if dev.type != "cuda":
        return [t.detach().numpy() for t in tensors]
    with torch.cuda.device(dev):
        hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for h, t in zip(hosts, tensors):
            h.copy_(t.detach(), non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(dev))
    done.synchronize()
    return [h.numpy() for h in hosts]
