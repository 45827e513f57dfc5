"""The frame-by-frame loops people write today, for ``bench_speed.py`` to compare with:
``cv2.VideoCapture`` → preprocess → torchcam's CAM or pytorch-grad-cam's GradCAM on the
default model's weights (timm ``tf_efficientnet_lite0``) → ``cv2.applyColorMap`` +
``addWeighted`` + label → ``cv2.VideoWriter`` (mp4v), torch's default threads."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from camvideo.model.registry import _load_lite0


def _loop(path: Path, out: Path, limit: int, size: tuple[int, int], mean, std,
          cam_fn) -> tuple[float, float]:
    """The frame-by-frame loop: OpenCV read → preprocess → ``cam_fn`` → blend → write.
    Returns (fps, CPU seconds per frame)."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    mean = np.array(mean, np.float32).reshape(3, 1, 1)
    std = np.array(std, np.float32).reshape(3, 1, 1)
    n = 0
    t, c = time.perf_counter(), time.process_time()
    while n < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        small = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        x = (small.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
        cam, label = cam_fn(torch.from_numpy(x)[None])
        cam = cv2.resize(cam.astype(np.float32), (w, h))
        heat = cv2.applyColorMap(np.uint8(255 * np.clip(cam, 0, 1)), cv2.COLORMAP_JET)
        out_img = cv2.addWeighted(bgr, 0.5, heat, 0.5, 0)
        cv2.putText(out_img, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255),
                    2, cv2.LINE_AA)
        writer.write(out_img)
        n += 1
    writer.release()
    cap.release()
    return n / (time.perf_counter() - t), (time.process_time() - c) / n


def bench_torchcam(path: Path, out: Path, limit: int, size, labels) -> tuple[float, float]:
    from torchcam.methods import CAM

    net = _load_lite0().eval()
    extractor = CAM(net, target_layer="bn2", fc_layer="classifier",
                    input_shape=(3, *size))

    def cam_fn(x):
        with torch.inference_mode():
            scores = net(x)
            c = int(scores[0].argmax())
            amap = extractor(c, scores)[0][0]
        return amap.numpy(), labels[c]

    try:
        return _loop(path, out, limit, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), cam_fn)
    finally:
        extractor.remove_hooks()


def bench_gradcam(path: Path, out: Path, limit: int, size, labels) -> tuple[float, float]:
    from pytorch_grad_cam import GradCAM

    net = _load_lite0().eval()
    cam = GradCAM(model=net, target_layers=[net.bn2])

    def cam_fn(x):
        gray = cam(input_tensor=x, targets=None)[0]
        c = int(cam.outputs[0].argmax())
        return gray, labels[c]

    try:
        return _loop(path, out, limit, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), cam_fn)
    finally:
        cam.activations_and_grads.release()
