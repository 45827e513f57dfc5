"""Make the sample clips the README uses.

Run from anywhere: ``python samples/make_samples.py``. Needs scikit-image (the photos).

Writes, next to this file:

- ``cat_and_mug.mp4``: 4 s, 640x360, 25 fps, H.264 + a quiet stereo AAC tone (440/660 Hz).
  Frames 0-59: Chelsea the cat slides left to right across a blue-grey gradient.
  Frame 60: hard cut to the espresso cup, which the camera slowly zooms into (frames 60-99).
- ``cat_and_mug.json``: the ground truth: every frame's time (s) and object box
  ``[x0, y0, x1, y1]`` (output pixels, half-open), the cut indices, size and fps.

The photos' licences are in ``LICENSE.md``.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from camvideo.testing import synth  # noqa: E402
from camvideo.testing.clip import Clip, write_clip  # noqa: E402

SIZE = (640, 360)
FPS = 25
PAN, ZOOM = 60, 40          # frames of each shot: 2.4 s + 1.6 s
MAX_BYTES = 600_000


def make_cat_and_mug(out_dir: Path = HERE) -> Clip:
    """Write ``cat_and_mug.mp4`` and its ``.json`` ground truth; return the Clip."""
    pan, pan_boxes = synth.pan_frames("chelsea", SIZE, PAN, scale=0.55)
    zoom, zoom_boxes = synth.zoom_frames("coffee", SIZE, ZOOM, zoom=(1.0, 1.35))
    frames = synth.FrameSequence(PAN + ZOOM,
                                 lambda i: pan[i] if i < PAN else zoom[i - PAN])
    path = out_dir / "cat_and_mug.mp4"
    for crf in (20, 23, 26, 29, 32):
        clip = write_clip(path, frames, fps=FPS, crf=crf, preset="slow", audio=True,
                          gop=2 * FPS, boxes=pan_boxes + zoom_boxes, cuts=[0, PAN])
        if path.stat().st_size <= MAX_BYTES:
            break
    logging.info("%s: %d bytes (crf %d)", path, path.stat().st_size, crf)
    meta = {"file": path.name, "size": list(clip.size), "fps": clip.fps,
            "frames": clip.frames, "cuts": clip.cuts, "crf": crf,
            "audio_seconds": clip.audio_seconds,
            "shots": ["chelsea (pan)", "coffee (zoom)"],
            "times": [round(t, 6) for t in clip.times],
            "boxes": [list(b) if b else None for b in clip.boxes]}
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items())
    (out_dir / "cat_and_mug.json").write_text("{\n" + body + "\n}\n")
    return clip


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clip = make_cat_and_mug()
    print(f"{clip.path}: {clip.frames} frames, {clip.path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
