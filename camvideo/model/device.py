"""Where and how the network runs: device, precision, threads, batch size and how many
forward passes at once (the network's inference-time rewrites: :mod:`camvideo.model.rewrite`).

- On the CPU the network gets ``cores - max(1, cores // 4)`` intra-op threads, split
  between two concurrent forward passes (:func:`default_infer_workers`; 1 thread each
  on 2 cores): OpenMP threads that have to share their cores with decoding and encoding
  spin and stall, which made a 2-thread forward pass 2-4x *slower* inside the pipeline
  than a 1-thread one, while two 1-thread passes use both cores whenever the other
  stages leave them idle. ``OMP_NUM_THREADS`` wins.
- bf16 autocast is the CPU default where the CPU has native bf16 (AVX512-BF16 / AMX;
  about 2.5x fp32 there); fp16 on CUDA; fp32 on other CPUs. ``int8`` (:data:`INT8`:
  the backbone quantised and run by ONNX Runtime, :mod:`camvideo.model.quantize`) is
  there to ask for: within the stated tolerance of fp32, but measured no faster than the
  traced fp32 graph on a 2-core AVX2 EPYC, so not chosen by ``auto``. The linear head and
  the maps stay fp32 in every precision.
- What the CPU can run is read once into :class:`CpuCaps` (:func:`cpu_caps`), which
  honours oneDNN's own ``ONEDNN_MAX_CPU_ISA`` cap; every CPU-dependent choice here and in
  :mod:`camvideo.model.rewrite` reads it, so tests simulate a CPU class by replacing it.
  ``--precision bf16`` where oneDNN has no bf16 convolutions at all (AVX2-only CPUs) is
  refused: torch's reference bf16 kernels ran the default model ~35x slower than fp32
  there (about 1 s against 28 ms per frame on a 2-core AVX2 EPYC; benchmarks/README.md,
  "CPU classes").
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OptionError
from ..options import PRECISIONS

log = logging.getLogger(__name__)

#: what :func:`resolve_precision` returns for ``int8``: not an autocast dtype, a marker
#: (int8 has no autocast): the engine runs the quantised backbone
#: (:mod:`camvideo.model.quantize`) instead of autocasting
INT8 = torch.qint8


def is_int8(precision: torch.dtype | None) -> bool:
    """``precision`` (from :func:`resolve_precision`) asks for the quantised backbone."""
    return precision == INT8


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
        raise OptionError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N",
                          option="device") from None
    if dev.type not in ("cpu", "cuda"):
        raise OptionError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N",
                          option="device")
    return dev


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        OptionError: unknown spec, or CUDA asked for but not available.
    """
    dev = parse_device(spec)
    if dev is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        why = gpu_unusable_reason()
        if why:  # a benchmark or a batch must not report CPU figures as GPU ones unseen
            log.warning("device auto: this machine has an NVIDIA GPU, but torch cannot use "
                        "it (%s); running on the CPU", why)
        else:
            log.info("device auto: no CUDA GPU; running on the CPU")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device cuda asked for, but no CUDA GPU is available",
                              option="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"no GPU {dev.index}: {torch.cuda.device_count()} present",
                              option="device")
    return dev


#: oneDNN's ISA names (``ONEDNN_MAX_CPU_ISA``) from which it has native bf16 instructions
_ONEDNN_NATIVE_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512",
                       "AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16",
                       "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
                       "DEFAULT", "ALL")


@dataclass(frozen=True)
class CpuCaps:
    """What this CPU runs, as far as camvideo's choices depend on it.

    Attributes:
        name: a short description for messages (``"AVX2"``, ``"AVX-512"``,
            ``"AVX512-BF16"``, ``"AMX"``; ``" (oneDNN capped at X)"`` when
            ``ONEDNN_MAX_CPU_ISA`` restricts it).
        bf16_kernels: oneDNN runs bf16 convolutions (natively, or converting with AVX-512
            BW/VL/DQ or AVX-NE-CONVERT). Without them bf16 falls back to torch's
            reference kernels, ~35x slower than fp32.
        native_bf16: it computes in bf16 natively (AVX512-BF16 or AMX, not capped away):
            bf16 is faster than fp32 there.
    """

    name: str
    bf16_kernels: bool
    native_bf16: bool


@functools.cache
def cpu_caps() -> CpuCaps:
    """This process's :class:`CpuCaps` (read once: oneDNN reads its cap once too)."""
    try:
        avx512 = bool(torch.cpu._is_avx512_supported())
        bf16 = bool(torch.cpu._is_avx512_bf16_supported())
        amx = bool(torch.cpu._is_amx_tile_supported())
        avx2 = bool(torch.cpu._is_avx2_supported())
    except AttributeError:  # older torch / non-x86 builds
        avx512 = bf16 = amx = avx2 = False
    name = ("AMX" if amx else "AVX512-BF16" if bf16 else "AVX-512" if avx512
            else "AVX2" if avx2 else "a CPU without AVX2")
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
           or "").strip().upper()
    if cap and cap not in ("DEFAULT", "ALL"):
        name += f" (oneDNN capped at {cap})"
    kernels = _onednn_runs_bf16()
    native = (bf16 or amx) and kernels and (not cap or cap in _ONEDNN_NATIVE_BF16)
    return CpuCaps(name, kernels, native)


def _onednn_runs_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions here: the check torch makes before each
    one (it reads oneDNN's own dispatch, so ``ONEDNN_MAX_CPU_ISA`` counts), or, where
    torch lacks that check, a tiny bf16 convolution tried."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    try:
        w = torch.zeros(2, 1, 3, 3, dtype=torch.bfloat16)
        x = torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)
        torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1,
                                                     list(x.shape))
        return True
    except (AttributeError, RuntimeError):
        return False


#: Files that exist where an NVIDIA driver is loaded.
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def gpu_unusable_reason() -> str | None:
    """Why torch cannot use an NVIDIA GPU that this machine has (its driver is loaded), or
    None when there is no such GPU (or torch can use it)."""
    if not any(Path(p).exists() for p in NVIDIA_DRIVER_FILES):
        return None
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return "this torch is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as e:  # noqa: BLE001 - the reason is the message
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return "torch.cuda.is_available() is False"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN uses it;
    elsewhere bf16 is emulated and slower than fp32 (see :class:`CpuCaps`)."""
    return cpu_caps().native_bf16


def int8_runtime_available() -> bool:
    """ONNX Runtime and onnx (its quantiser) are installed (looked up, not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``spec`` on ``device`` (None: plain fp32; :data:`INT8`: the
    quantised backbone, :func:`is_int8`).

    ``auto`` is fp16 on CUDA, bf16 on CPUs with native bf16 (:func:`cpu_has_native_bf16`;
    about twice as fast there, maps within ~0.1 of fp32's, see benchmarks/README.md), and
    fp32 on other CPUs: int8 within the tolerance of fp32 ran no faster than the traced
    fp32 graph on a 2-core AVX2 EPYC (every layer in int8 ran ~1.4x as fast but moved the
    classes of frames with flat backdrops; benchmarks/README.md, "CPU classes"), so it
    is only run when asked for (``int8``, where ONNX Runtime is installed).

    Raises:
        OptionError: an unknown spec; fp16 on the CPU; bf16 on a CPU whose oneDNN has no
            bf16 convolutions (:attr:`CpuCaps.bf16_kernels`); int8 on CUDA, or without
            ONNX Runtime.
    """
    if spec not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}",
                          option="precision")
    if spec == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if spec == "fp32":
        return None
    if spec == "int8":
        if device.type != "cpu":
            raise OptionError("int8 is for the CPU; on CUDA use fp16 or fp32",
                              option="precision")
        if not int8_runtime_available():
            raise OptionError("int8 needs ONNX Runtime: pip install onnxruntime onnx (or "
                              "camvideo[int8])", option="precision")
        return INT8
    if spec == "fp16" and device.type == "cpu":
        raise OptionError("fp16 is for CUDA; on the CPU use bf16 or fp32", option="precision")
    if spec == "bf16" and device.type == "cpu":
        caps = cpu_caps()
        if not caps.bf16_kernels:
            raise OptionError(
                f"bf16 needs a CPU whose oneDNN runs bf16 (AVX-512 or AVX-NE-CONVERT); "
                f"this one is {caps.name}, where bf16 is ~35x slower than fp32: "
                f"use fp32 (or auto)", option="precision")
        if not caps.native_bf16:
            log.warning("this CPU (%s) has no native bf16 (AVX512-BF16/AMX): bf16 is "
                        "emulated and likely slower than fp32", caps.name)
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
