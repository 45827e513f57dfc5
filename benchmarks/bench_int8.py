"""int8 against fp32 on this CPU: how far the maps and classes move (real photos the
calibration did not see) and how fast each way runs the default model's backbone.

1. Agreement (:func:`camvideo.model.quantize.agreement`) of the int8 network with the
   fp32 one on stills of the held-out photos (``camvideo.testing.crops.HELD_OUT``:
   chelsea, motorcycle, china, flower; 8 crops each, and 8 frames each of a pan over a
   flat backdrop, 224x384): map correlation, top-1
   agreement (all, and where fp32's two best classes are >= 0.1 apart), probabilities;
   with ``--bf16`` also bf16 autocast against fp32, for comparison (on CPUs without
   oneDNN bf16 that runs torch's reference kernels: slow).
2. Speed: the backbone at 224x384, batch 4 and 1, one thread, ms per frame, medians of
   interleaved rounds: fp32 traced (camvideo's fp32 path), int8 through ONNX Runtime
   (camvideo's int8 path), and, when installed, the same int8 network through OpenVINO.

    python benchmarks/bench_int8.py [--rounds 7] [--bf16]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from camvideo.model import quantize
from camvideo.model.device import cpu_caps
from camvideo.model.registry import load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import TracedBackbone
from camvideo.testing.crops import HELD_OUT, pan_stills, photo_crops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bf16", action="store_true", help="also bf16 against fp32")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = optimize_model(load_model())
    t = time.perf_counter()
    data, check = quantize.build(model)
    print(f"CPU: {cpu_caps().name}; quantised in {time.perf_counter() - t:.1f} s; "
          f"build-time check (shipped photos): {check}")
    session = quantize._session(data, 1)
    tb = TracedBackbone(model, None)
    w, b = model.weight.detach(), model.bias.detach()
    print(f"tolerance: {quantize.TOLERANCE}")
    for what, images in (("crops", photo_crops(HELD_OUT, 8)),
                         ("pan frames", pan_stills(HELD_OUT, 8))):
        x = quantize.normalised(model, images)
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ref = torch.cat([tb(xc[i:i + 4]) for i in range(0, len(x), 4)])
            got = torch.cat([quantize._run(session, x[i:i + 4]) for i in range(0, len(x), 4)])
        a = quantize.agreement(ref, got, w, b)
        print(f"int8 vs fp32, {len(x)} {what} of {', '.join(HELD_OUT)}: {a}; "
              f"within: {a.within()}")
        if args.bf16:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bf = torch.cat([model.backbone(xc[i:i + 4]).float()
                                for i in range(0, len(x), 4)])
            print(f"bf16 vs fp32, same {what}: {quantize.agreement(ref, bf, w, b)}")
    x = quantize.normalised(model, photo_crops(HELD_OUT, 1))
    try:
        import openvino as ov

        core = ov.Core()
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1})
    except ImportError:
        ov = None
    for n in (4, 1):
        shape = (n, 3, *x.shape[2:])
        fixed = quantize.with_input_shape(data, shape)  # as camvideo runs it
        s_fixed = quantize._session(fixed, 1)
        ways = {"fp32 traced (torch, oneDNN Graph)":  # batch 1: its own graph, not padded
                lambda v, vc: tb(vc) if len(vc) == 4 else tb.per_frame(vc),
                "int8 ONNX Runtime (camvideo's)": lambda v, vc: quantize._run(s_fixed, v),
                "int8 ONNX Runtime, any input size": lambda v, vc: quantize._run(session, v)}
        if ov is not None:
            req = core.compile_model(core.read_model(fixed), "CPU",
                                     {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            ways["int8 OpenVINO (same network)"] = lambda v, vc: req.infer({0: v.numpy()})
        v = x[:n].contiguous()
        vc = v.contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {k: [] for k in ways}
        with torch.inference_mode():
            for f in ways.values():
                f(v, vc)
                f(v, vc)
            for _ in range(args.rounds):
                for k, f in ways.items():
                    t = time.perf_counter()
                    f(v, vc)
                    times[k].append((time.perf_counter() - t) / n * 1e3)
        base = statistics.median(times[next(iter(ways))])
        print(f"backbone 224x384, batch {n}, 1 thread, ms/frame (median of {args.rounds}):")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"  {k:<36} {m:6.1f}  x{base / m:.2f} vs fp32")


if __name__ == "__main__":
    main()
