"""The backbone in int8 on the CPU: quantised once per model by ONNX Runtime, run by it.

On CPUs without native bf16 (AVX2-only ones, most laptops and many cloud machines) the
network in fp32 is the pipeline's largest cost. EfficientNet-Lite0, the default model,
was designed for int8 (ReLU6, no squeeze-excite): quantised (static, QDQ, weights int8 per
output channel, activations uint8, weights on 7 bits as ONNX Runtime advises for CPUs
without VNNI) with every layer in int8 its backbone ran ~1.4x as fast as the traced fp32
graph on a 2-core AVX2 EPYC, but outside the tolerance below; with the one block kept in
float that brings it within (:data:`FLOAT_LAYERS`) it ran no faster there (26.2 against
26.2 ms per frame; benchmarks/README.md, "int8 on AVX2"), so ``auto`` does not pick it:
it runs when asked for, for CPUs where int8 may pay (VNNI ones; untested). PyTorch's own
x86 int8 path (PT2E) is not in torch 2.14 (it moved to torchao) and needs a compiler at
run time; OpenVINO ran the same int8 network 1.28x as fast as ONNX Runtime here but is a
180 MB dependency and takes ~2 s to compile the network at every start: ONNX Runtime it
is.

How a model is quantised (:func:`build`, once; the result is cached on disk,
:mod:`camvideo.model.cache`):

1. its (batch-norm folded) backbone is exported to ONNX with any batch size and input
   size (the "SAME" paddings are the same for every input that is a multiple of the
   model's stride, which every model input is);
2. the activation ranges are measured on 16 photos shipped with camvideo
   (``calibration/calib-*.jpg``: public-domain and CC0 photos from scikit-image, none
   of those the tests measure on);
3. the int8 network is checked against fp32 on 8 other shipped crops
   (``calibration/check-*.jpg``) with a looser guard (:data:`GUARD`: some of these
   photos hold no ImageNet object, and the maps of weak classes move more); one outside
   it is not used (fp32 runs instead, with a warning). This catches a model that does
   not quantise; the tolerance below is the claim, measured on held-out photos.

Tolerance (:data:`TOLERANCE`), against the fp32 network on the same input: the maps of
fp32's top-1 class correlate (Pearson, over the feature map's cells) at least 0.98 on
average and 0.90 on every photo; the top-1 class is the same wherever fp32's two best
classes are at least 0.1 apart in probability; no class probability moves by more than
0.15. The linear head, the maps and everything after the features stay fp32. Measured
on real photos that are not in the calibration set (tests/test_quantize.py,
benchmarks/bench_int8.py).

Only the features come out of the int8 network (dequantised to float32): the head, CAM
and smoothing are the same code as for every other precision. ``--precision fp32`` stays
the exact network.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from . import cache
from .cammodel import CamModel
from .device import cpu_caps, is_int8
from .trace import TracedBackbone, traced_backbone
from ..cam import cam_maps, logits_from_features
from ..options import DEFAULT_MODEL

log = logging.getLogger(__name__)

#: layers kept in float, by model: ONNX node names containing one of the strings.
#: EfficientNet-Lite0 with every layer in int8 moved the class scores of frames with
#: large flat areas (a photo panning over a smooth backdrop: probabilities by up to 0.29,
#: the top-1 class changed on half of such frames) while its maps stayed correlated.
#: Leaving one part in float at a time (benchmarks/README.md, "int8"), only the first
#: block of the second stage (``blocks.1.0``: 16 -> 96 channels at 1/2 resolution, then
#: the stride-2 depthwise, ~7 % of the multiply-adds) brought those frames within the
#: tolerance; none of its three convolutions alone did.
FLOAT_LAYERS: dict[str, tuple[str, ...]] = {DEFAULT_MODEL: ("/blocks.1.0/",)}

#: the tolerance of int8 against fp32 (see the module's notes)
TOLERANCE = {"corr_mean": 0.98, "corr_min": 0.90, "top1_margin": 0.10, "prob": 0.15}
#: the build-time guard on the shipped check photos (the default model measured 0.947
#: mean, 0.864 min, top-1 the same on every clear photo, probabilities within 0.055)
GUARD = {"corr_mean": 0.90, "corr_min": 0.75, "top1_margin": 0.10, "prob": 0.15}

CALIBRATION_DIR = Path(__file__).with_name("calibration")

_LOCK = threading.Lock()


@dataclass(frozen=True)
class Agreement:
    """How int8 features compare with fp32 ones on the same inputs (see :func:`agreement`).

    Attributes:
        corr_mean, corr_min: Pearson correlation of the maps of fp32's top-1 class,
            over the map cells: mean and minimum over the inputs.
        top1: fraction of inputs with the same top-1 class.
        top1_clear: the same among inputs whose fp32 top-2 probabilities are at least
            ``TOLERANCE["top1_margin"]`` apart (1.0 when there is none).
        prob: largest absolute difference of a class probability.
        n: number of inputs.
    """

    corr_mean: float
    corr_min: float
    top1: float
    top1_clear: float
    prob: float
    n: int

    def within(self, tol: dict[str, float] = TOLERANCE) -> bool:
        return (self.corr_mean >= tol["corr_mean"] and self.corr_min >= tol["corr_min"]
                and self.top1_clear >= 1.0 and self.prob <= tol["prob"])

    def __str__(self) -> str:
        return (f"map correlation mean {self.corr_mean:.4f}, min {self.corr_min:.4f}; "
                f"top-1 same on {self.top1:.0%} ({self.top1_clear:.0%} of clear ones); "
                f"probabilities within {self.prob:.3f} ({self.n} photos)")


def agreement(ref: Tensor, got: Tensor, weight: Tensor, bias: Tensor | None,
              margin: float = TOLERANCE["top1_margin"]) -> Agreement:
    """Compare features ``got`` with ``ref`` (both ``(N, C, h, w)`` float) through the
    head ``weight`` ``(K, C)`` / ``bias`` ``(K,)``: maps of ``ref``'s top-1 class,
    top-1 classes and probabilities (:class:`Agreement`)."""
    ref, got = ref.float(), got.float()
    p_ref = logits_from_features(ref, weight.float(), bias).softmax(1)
    p_got = logits_from_features(got, weight.float(), bias).softmax(1)
    cls = p_ref.argmax(1)
    same = p_got.argmax(1) == cls
    top2 = p_ref.topk(min(2, p_ref.shape[1]), 1).values
    clear = (top2[:, 0] - top2[:, -1]) >= margin if top2.shape[1] > 1 else \
        torch.ones_like(same)
    a = cam_maps(ref, weight.float(), cls).flatten(1)
    b = cam_maps(got, weight.float(), cls).flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return Agreement(float(corr.mean()), float(corr.min()), float(same.float().mean()),
                     float(same[clear].float().mean()) if bool(clear.any()) else 1.0,
                     float((p_got - p_ref).abs().max()), int(ref.shape[0]))


def photos(kind: str) -> list[np.ndarray]:
    """The shipped photos (``"calib"`` or ``"check"``), ``(224, 384, 3)`` uint8 RGB."""
    import cv2

    files = sorted(CALIBRATION_DIR.glob(f"{kind}-*.jpg"))
    if not files:
        raise FileNotFoundError(f"no {kind} photos in {CALIBRATION_DIR}")
    return [cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for f in files]


def normalised(model: CamModel, images: list[np.ndarray]) -> Tensor:
    """``(N, 3, H, W)`` float32 model input (NCHW, contiguous) from uint8 RGB images."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return ((x - model.mean.cpu()) / model.std.cpu()).contiguous()


# ---------------------------------------------------------------------------------------
# Building


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantiser's warnings (tracer warnings, "bias exceeds the
    range of int32" for channels whose weights are all ~0) are not the user's business:
    the result is checked against fp32 instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _session(onnx_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shares cores
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def with_input_shape(onnx_bytes: bytes, shape: tuple[int, ...]) -> bytes:
    """The network with its input's dimensions fixed to ``shape``: ONNX Runtime plans a
    network of known shapes ahead (a batch of 4 at 224x384 ran ~20 % faster than with
    any batch and size allowed), so each input shape gets its own session of the one
    quantised network (no new calibration)."""
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, shape):
        d.Clear()
        d.dim_value = int(v)
    for value in list(m.graph.value_info):  # shapes inferred for any size: again
        m.graph.value_info.remove(value)
    return onnx.shape_inference.infer_shapes(m).SerializeToString()


def _run(session: Any, x: Tensor) -> Tensor:
    """Features ``(N, C, h, w)`` float32 of the ONNX network for NCHW input ``x``."""
    out = session.run(None, {"x": x.float().contiguous().numpy()})[0]
    return torch.from_numpy(out)


def build(model: CamModel) -> tuple[bytes, Agreement]:
    """Quantise ``model``'s backbone (see the module's notes): the int8 ONNX network and
    its :class:`Agreement` with fp32 on the shipped check photos.

    Raises:
        ImportError: onnx / onnxruntime missing; RuntimeError etc. from the exporter.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    net = model.backbone
    calib = normalised(model, photos("calib"))
    check = normalised(model, photos("check"))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"x": calib[i:i + 4].numpy()} for i in range(0, len(calib), 4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="camvideo-int8-") as tmp, _quiet(), \
            torch.inference_mode(False), torch.no_grad():
        fp32, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        int8 = Path(tmp) / "int8.onnx"
        # one eager pass first: the fused convolutions make their padded or cast weights
        # then, so that the exporter sees them as constants, not as traced operations
        net(check[:1].contiguous(memory_format=torch.channels_last))
        torch.onnx.export(net, (check[:1],), str(fp32), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["features"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "features": {0: "n", 2: "fh", 3: "fw"}})
        quant_pre_process(str(fp32), str(pre))  # shapes inferred, graph simplified
        keep = FLOAT_LAYERS.get(model.name, ())
        names = [n.name for n in onnx.load(str(pre)).graph.node]
        floats = [n for n in names if any(k in n for k in keep)]
        if keep and not floats:
            log.info("%s: none of its layers to keep in float %s were found", model.name,
                     keep)
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=floats)
        data = int8.read_bytes()
        ref = torch.cat([net(check[i:i + 4].contiguous(memory_format=torch.channels_last))
                         for i in range(0, len(check), 4)]).float()
    got = _run(_session(data, torch.get_num_threads()), check)
    bias = model.bias.detach().float().cpu() if model.bias is not None else None
    return data, agreement(ref, got, model.weight.detach().float().cpu(), bias)


# ---------------------------------------------------------------------------------------
# Running


class Int8Backbone:
    """``model.backbone`` as the int8 ONNX Runtime network: call it like the backbone on
    CPU ``(N, 3, H, W)`` input (any input size that is a multiple of the model's stride)
    → float32 features. The network is built (or read from the cache) on the first
    call; each input shape then gets a session of its own (:func:`with_input_shape`):
    as with the traced graphs, streams of equal batches run the whole batch (a short
    last batch is padded) and :meth:`per_frame` runs any batch frame by frame. Where
    the network cannot be built or misses the guard, the fp32 traced graphs
    (:class:`camvideo.model.trace.TracedBackbone`) run instead.

    Use :func:`cpu_backbone` to get the model's shared instance.
    """

    def __init__(self, model: CamModel) -> None:
        self.model = model
        self._onnx: bytes | None = None
        self._sessions: dict[tuple[int, ...], Any] = {}
        self._batch = 0  # the largest batch run: shorter ones are padded to it
        self._fallback: Any = None
        self._ready = False
        self._lock = threading.Lock()
        self.agreement: Agreement | None = None  #: with fp32, when built or loaded

    @property
    def active(self) -> bool:
        """The int8 network runs (False: the fp32 fallback does)."""
        self._prepare()
        return self._onnx is not None

    def __call__(self, x: Tensor) -> Tensor:
        self._prepare()
        if self._onnx is None:
            return self._fallback(x)
        n = x.shape[0]
        if 0 < n < self._batch:
            full = torch.cat((x, x.new_zeros((self._batch - n, *x.shape[1:]))))
            return _run(self._session(tuple(full.shape)), full)[:n]
        self._batch = max(self._batch, n)
        return _run(self._session(tuple(x.shape)), x)

    def per_frame(self, x: Tensor) -> Tensor:
        """Each frame of ``x`` (any batch size) through the batch-1 session."""
        self._prepare()
        if self._onnx is None:
            return self._fallback.per_frame(x)
        if x.shape[0] == 0:
            return self(x)
        s = self._session((1, *x.shape[1:]))
        return torch.cat([_run(s, x[i:i + 1]) for i in range(x.shape[0])])

    def _session(self, shape: tuple[int, ...]) -> Any:
        s = self._sessions.get(shape)
        if s is None:
            with self._lock:
                s = self._sessions.get(shape)
                if s is None:
                    assert self._onnx is not None
                    s = self._sessions[shape] = _session(
                        with_input_shape(self._onnx, shape), torch.get_num_threads())
        return s

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self._onnx = self._load_or_build()
            if self._onnx is None:
                self._fallback = traced_backbone(self.model, None)
            self._ready = True

    def _key(self) -> dict[str, Any]:
        import onnxruntime as ort

        return cache.key("int8", model=cache.fingerprint(self.model), cpu=cpu_caps().name,
                         onnxruntime=str(ort.__version__), guard=GUARD,
                         float_layers=list(FLOAT_LAYERS.get(self.model.name, ())),
                         calibration=sorted(p.name for p in CALIBRATION_DIR.glob("*.jpg")))

    def _load_or_build(self) -> bytes | None:
        name = self.model.name
        try:
            k = self._key()
        except ImportError as e:
            log.warning("%s: int8 needs ONNX Runtime (%s); running fp32", name, e)
            return None
        entry = cache.load(k)
        if entry is not None:
            try:
                self.agreement = Agreement(**entry["agreement"])
                if not entry["ok"]:
                    self._refuse()
                    return None
                data = bytes(entry["onnx"])
                log.info("%s: int8 network read from the cache", name)
                return data
            except Exception as e:  # noqa: BLE001 - a damaged entry: build it again
                cache.discard(k, e)
        t = time.monotonic()
        try:
            data, agree = build(self.model)
        except Exception as e:  # noqa: BLE001 - an optimisation: never fatal
            log.warning("%s: int8 quantisation failed (%s); running fp32", name,
                        str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
            return None
        self.agreement = agree
        ok = agree.within(GUARD)
        cache.store(k, {"onnx": data if ok else None, "ok": ok,
                        "agreement": agree.__dict__})
        if not ok:
            self._refuse()
            return None
        log.info("%s: quantised to int8 in %.1f s (%s)", name, time.monotonic() - t, agree)
        return data

    def _refuse(self) -> None:
        log.warning("%s: its int8 maps are too far from fp32's (%s); running fp32",
                    self.model.name, self.agreement)


def cpu_backbone(model: CamModel, precision: torch.dtype | None, trace: bool = True
                 ) -> Int8Backbone | TracedBackbone | None:
    """How the engine runs ``model``'s backbone on the CPU in ``precision`` (from
    :func:`camvideo.model.device.resolve_precision`), shared by the model's engines:
    int8 (:func:`~camvideo.model.device.is_int8`) → its :class:`Int8Backbone`; fp32/bf16
    → the traced graphs (:func:`camvideo.model.trace.traced_backbone`) when ``trace``,
    else None (eager)."""
    if not is_int8(precision):
        return traced_backbone(model, precision) if trace else None
    with _LOCK:
        runner = model.__dict__.get("_camvideo_int8")
        if runner is None:
            runner = model.__dict__["_camvideo_int8"] = Int8Backbone(model)
        return runner
