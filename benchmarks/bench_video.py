"""Video networks: camvideo's forward-only CAM in space and time against pytorch-grad-cam's
GradCAM (which handles 3-D convolutions: a backward pass per clip) on the same
``r3d_18`` and the same clip.

Both get the same network (random weights: speed does not depend on them; 400 classes, as
Kinetics-400), the same frames and the same input (each frame resized to short side 112,
aspect kept: 112x192 for a 16:9 frame, clips of 16). Measured in one run, in interleaved
rounds (``--rounds``, medians), in frames per second:

- ``model+CAM``: one clip of 16 frames in, the top class's map of each frame out.
  camvideo: forward pass and, per frame, the features at its time (interpolated) and
  the class's map at feature resolution (what the pipeline draws from). GradCAM
  (``target_layers=[layer4]``, the top class): forward, backward, and its maps
  upsampled to the input by its own ``scale_cam_image`` (its only output). The same
  normalised clip tensor for both.
- ``pipeline``: the whole job on a file. camvideo: ``camvideo.annotate`` with the model
  already loaded (decode, clips every 8 frames (the default hop) and every 16, per-frame
  maps, smoothing, colour, labels, x264, in its threads; the network with the engine's
  default threads, and with one thread per core for comparison). GradCAM: the loop one
  writes with it (``cv2.VideoCapture`` → clips of 16 consecutive frames, the last one
  padded → GradCAM → each frame's map resized to the frame, ``applyColorMap`` +
  ``addWeighted`` + label → ``cv2.VideoWriter``, mp4v).

``model+CAM`` rows and the GradCAM loop run with torch's default threads (one per core),
set again before each (the engine sets torch's threads process-wide).

Usage::

    nice -n 10 python benchmarks/bench_video.py [--frames 64] [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.models import video as tvv  # noqa: E402

import camvideo  # noqa: E402
from camvideo.cam import cam_maps  # noqa: E402
from camvideo.model.device import cpu_count, pipeline_threads  # noqa: E402
from camvideo.runtime import engine as engine_mod  # noqa: E402
from camvideo.model.registry import load_model  # noqa: E402
from camvideo.testing import synth  # noqa: E402
from bench_speed import machine  # noqa: E402  (benchmarks/bench_speed.py)

T = 16


def make_clip(path: Path, frames: int) -> Path:
    """A 640x360 pan and zoom over real photos, 30 fps (cached)."""
    if not path.exists():
        half = frames // 2
        pan = synth.pan_frames("chelsea", (640, 360), half, background="coffee")[0]
        zoom = synth.zoom_frames("coffee", (640, 360), frames - half)[0]
        synth.write_clip(path, [*pan, *zoom], fps=30, crf=20)
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def clip_tensor(model, frames: list[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """``(1, 3, T, H, W)`` normalised as the weights expect."""
    xs = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames]
    x = torch.from_numpy(np.stack(xs)).permute(3, 0, 1, 2).float().div_(255.0)[None]
    return (x - model.mean[..., None]) / model.std[..., None]


def camvideo_clip(model, x: torch.Tensor) -> np.ndarray:
    """Forward-only: the top class's ``(T, h, w)`` maps of one clip."""
    with torch.inference_mode():
        feats, logits = model(x)
        per_frame = model.frame_features(feats[0], torch.arange(T, dtype=torch.float32))
        c = logits.argmax(1).expand(T)
        return cam_maps(per_frame, model.weight, c).numpy()


def make_gradcam(net):
    from pytorch_grad_cam import GradCAM

    return GradCAM(model=net, target_layers=[net.layer4])


def gradcam_clip(cam, x: torch.Tensor) -> np.ndarray:
    """Forward + backward: GradCAM's ``(T, H, W)`` maps of one clip (top class)."""
    return cam(input_tensor=x, targets=None)[0]


def gradcam_loop(cam, labels: list[str], path: Path, out: Path,
                 size: tuple[int, int], model) -> float:
    """The frame loop with GradCAM: clips of T consecutive frames (last one padded);
    returns frames per second."""
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    n, ended = 0, False
    while not ended:
        bgrs = []
        while len(bgrs) < T:
            ok, bgr = cap.read()
            if not ok:
                ended = True
                break
            bgrs.append(bgr)
        if not bgrs:
            break
        rgbs = [cv2.cvtColor(b, cv2.COLOR_BGR2RGB) for b in bgrs]
        rgbs += [rgbs[-1]] * (T - len(rgbs))
        maps = gradcam_clip(cam, clip_tensor(model, rgbs, size))
        label = labels[int(cam.outputs[0].argmax())]
        for bgr, m in zip(bgrs, maps):
            heat = cv2.applyColorMap(np.uint8(255 * np.clip(cv2.resize(m, (w, h)), 0, 1)),
                                     cv2.COLORMAP_JET)
            img = cv2.addWeighted(bgr, 0.5, heat, 0.5, 0)
            cv2.putText(img, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                        (255, 255, 255), 2, cv2.LINE_AA)
            writer.write(img)
            n += 1
    writer.release()
    cap.release()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64, help="clip length in frames [64]")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds [2]")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="camvideo-bench-video-"))
    clip = make_clip(Path(tempfile.gettempdir()) / "camvideo-bench" /
                     f"video-{args.frames}.mp4", args.frames)
    torch.manual_seed(0)
    net = tvv.r3d_18(num_classes=400).eval()
    torch.save(net.state_dict(), tmp / "r3d_18.pth")
    model = load_model("r3d_18", weights=tmp / "r3d_18.pth")
    frames = read_frames(clip)
    size = model.input_size(*frames[0].shape[:2], model.default_side)
    x = clip_tensor(model, frames[:T], size)
    cam = make_gradcam(net)
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads (engine default: {pipeline_threads()}); clip {clip.name}: {len(frames)} frames "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}, model input {T}x{size[0]}x{size[1]}",
          flush=True)
    camvideo_clip(model, x)          # warm-up: oneDNN primitives
    gradcam_clip(cam, x)
    runs: dict[str, list[float]] = {}

    def record(name: str, fps: float) -> None:
        runs.setdefault(name, []).append(fps)
        print(f"  {name:<28} {fps:7.3f} fps", flush=True)

    cores = cpu_count()

    def pipeline(hop: int, threads: int | None) -> float:
        if threads is not None:   # the engine's default is pipeline_threads()
            engine_mod.pipeline_threads = lambda: threads  # type: ignore[assignment]
        try:
            s = camvideo.annotate(clip, tmp / "out.mp4", model=model, overwrite=True,
                                  audio=False, clip_hop=hop)
        finally:
            engine_mod.pipeline_threads = pipeline_threads
        return s.frames / s.seconds

    for r in range(args.rounds):
        print(f"round {r + 1}", flush=True)
        torch.set_num_threads(cores)
        t = time.perf_counter()
        camvideo_clip(model, x)
        record("model+CAM camvideo", T / (time.perf_counter() - t))
        t = time.perf_counter()
        gradcam_clip(cam, x)
        record("model+CAM GradCAM", T / (time.perf_counter() - t))
        for hop in (8, 16):
            record(f"pipeline camvideo hop {hop}", pipeline(hop, None))
        record(f"pipeline hop 16, {cores} threads", pipeline(16, cores))
        torch.set_num_threads(cores)
        record("pipeline GradCAM loop", gradcam_loop(cam, model.labels, clip,
                                                     tmp / "gc.mp4", size, model))
    cam.activations_and_grads.release()
    med = {k: statistics.median(v) for k, v in runs.items()}
    print("medians:")
    for k, v in med.items():
        print(f"  {k:<28} {v:7.3f} fps")
    ratios = {
        "model+CAM": med["model+CAM camvideo"] / med["model+CAM GradCAM"],
        "pipeline hop 16 (same clips)": med["pipeline camvideo hop 16"]
        / med["pipeline GradCAM loop"],
        "pipeline hop 8 (default, 2x the clips)": med["pipeline camvideo hop 8"]
        / med["pipeline GradCAM loop"],
    }
    for k, v in ratios.items():
        print(f"ratio camvideo / GradCAM, {k}: x{v:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "frames": len(frames),
                                         "input": [T, *size], "runs": runs,
                                         "medians": med, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
