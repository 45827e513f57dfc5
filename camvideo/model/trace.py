"""The backbone as fused TorchScript graphs on the CPU (oneDNN Graph, "LLGA").

Run eagerly, each of the default model's 49 convolutions costs ~70 µs of fixed work per
call (Python, dispatch, oneDNN primitive look-up) whatever its size: ~5 ms a forward pass.
Traced, frozen and handed to oneDNN Graph, the network runs as a few fused partitions
instead: 13 % less time per batch of four 224×384 frames on the 2-core developer machine
(benchmarks/README.md, "Speed"). Tracing takes ~0.6 s and is done once per model,
precision and input shape (kept on the model, so batch jobs share it).

A traced graph holds its input's shape. Streams of equal batches (file jobs, where only
the last batch can be short: it is padded to the full batch and the padding dropped from
the output) run a graph of the whole batch. Batches of any size (``--stride``'s key frames,
live streams) run frame by frame through the batch-1 graph (:meth:`TracedBackbone.per_frame`):
per frame that costs about what the batched graph does, and 7-22 % less than the eager
network in batches of 4 to 1 (benchmarks/bench_trace.py). Each graph is checked against the eager network on its first batch; a failure to trace
or a mismatch leaves the eager network in use, with a log line.

Graphs are kept on disk (:mod:`camvideo.model.cache`), keyed by the model's
:func:`~camvideo.model.cache.fingerprint` (its name and weights' SHA-256, or its tensors' bytes), precision,
input shape, CPU class and the torch/camvideo versions: a later run loads the graph
instead of building the network and tracing it. A loaded graph must reproduce the
output stored with it on a fixed probe input (within the same tolerance as a fresh one
against the eager network); one that does not, or does not load, is a corrupt entry:
removed with a warning and traced again. Compiling the fused partitions (the graph's
first two runs, ~1.5 s for the default model on 2 AVX2 cores) happens in every process.

Turning oneDNN Graph fusion on is process-wide (``torch.jit.enable_onednn_fusion``) and
is left on: the fused graphs check it when they run. It changes only TorchScript graphs.
"""
from __future__ import annotations

import io
import logging
import threading
import warnings
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from . import cache
from .cammodel import CamModel
from .device import cpu_caps

log = logging.getLogger(__name__)

_LOCK = threading.Lock()


class TracedBackbone:
    """``model.backbone`` as fused graphs, one per input shape (see the module's notes).

    Call it like the backbone, on CPU ``(N, 3, H, W)`` channels_last input, under the
    same autocast; use :func:`traced_backbone` to get the model's shared instance.
    """

    def __init__(self, model: CamModel, precision: torch.dtype | None) -> None:
        self.model = model
        self.precision = precision
        self._graphs: dict[tuple[int, ...], torch.jit.ScriptModule | None] = {}
        self._batch = 0  # the largest batch traced: shorter ones are padded to it
        self._lock = threading.Lock()

    def __call__(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if 0 < n < self._batch:
            pad = x.new_zeros((self._batch - n, *x.shape[1:])) \
                .contiguous(memory_format=torch.channels_last)
            full = torch.cat((x, pad)).contiguous(memory_format=torch.channels_last)
            if self._graph(full) is not None:
                return self(full)[:n]
        graph = self._graph(x)
        return graph(x) if graph is not None else self.model.backbone(x)

    def per_frame(self, x: Tensor) -> Tensor:
        """Like calling it, but each frame of ``x`` (any batch size) goes through the
        batch-1 graph: one graph for batches of every size."""
        graph = self._graph(x[:1]) if x.shape[0] else None
        if graph is None:
            return self.model.backbone(x)
        return torch.cat([graph(x[i:i + 1]) for i in range(x.shape[0])])

    def _graph(self, x: Tensor) -> torch.jit.ScriptModule | None:
        key = tuple(x.shape)
        if key in self._graphs:
            return self._graphs[key]
        with self._lock:
            if key not in self._graphs:
                self._graphs[key] = self._trace(x)
                if self._graphs[key] is not None:
                    self._batch = max(self._batch, x.shape[0])
        return self._graphs[key]

    def _tolerance(self, ref: Tensor) -> float:
        # bf16: both sides round differently (measured ~1.5 % of the largest feature)
        scale = max(1.0, ref.abs().max().item())
        return (0.05 if self.precision is not None else 1e-3) * scale

    def _autocast(self) -> Any:
        return (torch.autocast("cpu", dtype=self.precision, cache_enabled=False)
                if self.precision is not None else nullcontext())

    def _key(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return cache.key("graph", model=cache.fingerprint(self.model),
                         precision=str(self.precision), shape=list(shape), cpu=cpu_caps().name,
                         optimized=bool(getattr(self.model, "_camvideo_optimized", False)))

    def _trace(self, x: Tensor) -> torch.jit.ScriptModule | None:
        torch.jit.enable_onednn_fusion(True)
        k = self._key(tuple(x.shape))
        graph = self._load(k, x)
        if graph is not None:
            return graph
        graph = self._trace_fresh(x)
        if graph is not None and cache.cache_dir() is not None:
            self._store(k, graph, x)
        return graph

    def _load(self, k: dict[str, Any], x: Tensor) -> torch.jit.ScriptModule | None:
        """The cached graph for key ``k``, checked on its probe, or None."""
        entry = cache.load(k)
        if entry is None:
            return None
        try:
            probe, want = _probe(x), entry["probe_out"]
            with warnings.catch_warnings(), torch.no_grad(), self._autocast():
                warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
                graph = torch.jit.load(io.BytesIO(entry["graph"]), map_location="cpu")
                graph(probe)  # two profiling runs, then the fused graph
                graph(probe)
                got = graph(probe).float()
            err = (got - want).abs().max().item() if got.shape == want.shape else float("inf")
            if not err <= self._tolerance(want):
                raise ValueError(f"its output on the probe is off by {err:.3g}")
        except Exception as e:  # noqa: BLE001 - any failure: trace it again
            cache.discard(k, e)
            return None
        log.info("%s: traced graph for input %s read from the cache", self.model.name,
                 tuple(x.shape))
        return graph

    def _store(self, k: dict[str, Any], graph: torch.jit.ScriptModule, x: Tensor) -> None:
        try:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.save's deprecation notice
                torch.jit.save(graph, buf)
            with torch.no_grad(), self._autocast():
                out = graph(_probe(x)).float()
        except Exception as e:  # noqa: BLE001 - not cached, still used
            log.info("%s: the traced graph could not be cached (%s)", self.model.name, e)
            return
        cache.store(k, {"graph": buf.getvalue(), "probe_out": out})

    def _trace_fresh(self, x: Tensor) -> torch.jit.ScriptModule | None:
        net = self.model.backbone  # built here, not while tracing, if it was deferred
        try:
            with warnings.catch_warnings(), torch.no_grad(), self._autocast():
                warnings.simplefilter("ignore")  # tracer warnings: shapes become constants
                graph = torch.jit.freeze(torch.jit.trace(net, x, check_trace=False).eval())
                graph(x)  # two profiling runs, then the fused graph
                got = graph(x).float()
                ref = net(x).float()
        except Exception as e:  # noqa: BLE001 - an optimisation: never fatal
            log.info("%s: tracing failed (%s); running eagerly", self.model.name, e)
            return None
        tol = self._tolerance(ref)
        err = (got - ref).abs().max().item() if got.shape == ref.shape else float("inf")
        if not err <= tol:
            log.info("%s: the traced network differs (%.3g > %.3g); running eagerly",
                     self.model.name, err, tol)
            return None
        log.info("%s: traced and fused for input %s", self.model.name, tuple(x.shape))
        return graph


def _probe(x: Tensor) -> Tensor:
    """A fixed input of ``x``'s shape and layout (a cached graph's check)."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(tuple(x.shape), generator=g)
    return p.contiguous(memory_format=torch.channels_last) \
        if x.is_contiguous(memory_format=torch.channels_last) else p


def traced_backbone(model: CamModel, precision: torch.dtype | None) -> TracedBackbone:
    """The model's shared :class:`TracedBackbone` for ``precision`` (made once; int8 is
    :func:`camvideo.model.quantize.cpu_backbone`'s)."""
    with _LOCK:
        cache = model.__dict__.setdefault("_camvideo_traced", {})
        if precision not in cache:
            cache[precision] = TracedBackbone(model, precision)
        return cache[precision]
