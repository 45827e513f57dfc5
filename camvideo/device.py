"""Where and how the network runs: device, precision, threads, batch size and how many
forward passes at once (the network's inference-time rewrites: :mod:`camvideo.rewrite`).

- On the CPU the network gets ``cores - max(1, cores // 4)`` intra-op threads, split
  between two concurrent forward passes (:func:`default_infer_workers`; 1 thread each
  on 2 cores): OpenMP threads that have to share their cores with decoding and encoding
  spin and stall, which made a 2-thread forward pass 2-4x *slower* inside the pipeline
  than a 1-thread one, while two 1-thread passes use both cores whenever the other
  stages leave them idle. ``OMP_NUM_THREADS`` wins.
- bf16 autocast is the CPU default where the CPU has native bf16 (AVX512-BF16 / AMX;
  about 2.5x fp32 there); fp16 on CUDA. The linear head and the maps stay fp32.
"""
from __future__ import annotations

import logging
import os

import torch

from .errors import OptionError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def parse_device(spec: str) -> torch.device | None:
    """The device ``spec`` names (None for ``auto``), without asking whether this machine
    has it (a Ray driver checks its workers' devices this way).

    Raises:
        OptionError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return None
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise OptionError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        OptionError: unknown spec, or CUDA asked for but not available.
    """
    dev = parse_device(spec)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("--device cuda asked for, but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"no GPU {dev.index}: {torch.cuda.device_count()} present")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN is there;
    elsewhere bf16 is emulated and slower than fp32."""
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # older torch / non-x86 builds
        return False
    return bool(native) and torch.backends.mkldnn.is_available()


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``spec`` on ``device`` (None: plain fp32).

    ``auto`` is fp16 on CUDA, bf16 on CPUs with native bf16 (:func:`cpu_has_native_bf16`;
    about twice as fast there, maps within ~0.1 of fp32's, see benchmarks/README.md) and
    fp32 on other CPUs.
    """
    if spec not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if spec == "fp32":
        return None
    if spec == "fp16" and device.type == "cpu":
        raise OptionError("fp16 is for CUDA; on the CPU use bf16 or fp32")
    if spec == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and "
                    "likely slower than fp32")
    return torch.float16 if spec == "fp16" else torch.bfloat16


def default_batch_size(device: torch.device) -> int:
    """Frames per device batch when not given: 32 on CUDA, 4 on the CPU (one thread of
    EfficientNet-Lite0 at 224x384: 62 img/s at 1, 80 at 4, 77 at 8, 64 at 16; larger
    batches fall out of the caches and only add latency and memory)."""
    return 32 if device.type == "cuda" else 4


def default_infer_workers(device: torch.device, stride: int = 1) -> int:
    """Concurrent forward passes: 2 on the CPU (stride 1), each with half the network's
    threads, else 1.

    Two single-team passes let the network use a core whenever decoding or encoding
    leaves it idle, without OpenMP teams spinning at barriers on cores that other stages
    need (one 2-thread pass inside the pipeline ran 2-4x slower than a 1-thread one on
    2 cores; benchmarks/README.md, "Speed")."""
    return 2 if device.type == "cpu" and stride == 1 else 1


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pipeline_threads(cores: int | None = None) -> int:
    """Intra-op threads for the network on the CPU: all cores but ``max(1, cores // 4)``,
    which are left to decoding, rendering and encoding (2 cores → 1, 8 → 6, 16 → 12)."""
    n = cores if cores is not None else cpu_count()
    return max(1, n - max(1, n // 4))
