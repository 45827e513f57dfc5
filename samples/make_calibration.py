"""Make the photos the int8 network is calibrated and checked on
(``camvideo/model/calibration/``, :mod:`camvideo.model.quantize`).

Crops of public-domain and CC0 photos bundled with scikit-image (terms in
``camvideo/model/calibration/LICENSE.md``), 384x224 (the default model's input for 16:9
video), JPEG quality 92. ``calib-*`` set the int8 activation ranges; ``check-*``, other
crops of three of the photos, are the build-time check against fp32. None of the photos
the tests and benchmarks measure int8 on (chelsea, motorcycle, china, flower) is among
them.

    python samples/make_calibration.py
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data as data

OUT = Path(__file__).resolve().parents[1] / "camvideo" / "model" / "calibration"
W, H = 384, 224
#: photo -> crops for calibration, crops for the check
PHOTOS = {"astronaut": (3, 3), "coffee": (2, 3), "rocket": (2, 2), "camera": (1, 0),
          "hubble_deep_field": (1, 0), "retina": (1, 0), "brick": (1, 0), "grass": (1, 0),
          "gravel": (1, 0), "coins": (1, 0), "horse": (1, 0), "clock": (1, 0)}


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / max(1.0, float(img.max())) * 255).astype(np.uint8)
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = rng.uniform(0.6, 1.0)
    ch = int(min(h, w * H / W) * s)
    cw = int(ch * W / H)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = cv2.resize(img[y:y + ch, x:x + cw], (W, H), interpolation=cv2.INTER_AREA)
    return out[:, ::-1] if rng.random() < 0.5 else out


def main() -> None:
    rng = np.random.default_rng(2024)
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.jpg"):
        old.unlink()
    for name, (n_calib, n_check) in PHOTOS.items():
        img = _rgb(getattr(data, name)())
        for kind, n in (("calib", n_calib), ("check", n_check)):
            for i in range(n):
                crop = np.ascontiguousarray(_crop(img, rng))
                cv2.imwrite(str(OUT / f"{kind}-{name}-{i}.jpg"),
                            cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"{len(list(OUT.glob('*.jpg')))} photos in {OUT}")


if __name__ == "__main__":
    main()
