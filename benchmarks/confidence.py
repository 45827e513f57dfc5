"""Would a low-confidence cue help? Does the shown class's probability say when its map is wrong?

Issue #14 asks for a cue on screen (the map's opacity, a marker) when the shown class's
probability is under a threshold: "measured to help, or not added". A cue helps only if
the frames it marks are the ones whose map points elsewhere: this script measures how
well the probability, and three other candidate signals, separate maps that point at the
object from maps that do not.

Two sets, both with hand-annotated boxes (:mod:`benchmarks.localization`):

- **stills**: the calibration frames (real photos whole, zoomed, and smaller over
  blurred backdrops), per-frame maps and the top-1 class's probability (``--smooth 0``);
- **clips**: every annotated frame of the localization clips with default smoothing:
  the drawn map and the shown class's smoothed probability (what the label prints).

Per signal: AUROC for "the map's peak is on the object" (pointing, 15 px) and for "the
calibrated box has IoU >= 0.5" (0.5: no better than chance); per probability threshold P:
the frames a cue would mark (probability < P) against the rest.

Signals: ``probability`` (the shown class's), ``margin`` (over the runner-up),
``certainty`` (minus the entropy of the class distribution), ``compactness`` (minus the
share of the map >= half its peak: a diffuse map as weak evidence).

Usage::

    python benchmarks/confidence.py [--cache DIR] [--readme]

``--cache``: the model outputs ``localization.py --cache DIR`` saved (same clips).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import localization as loc  # noqa: E402  (puts the repository on sys.path)
from camvideo import cam as cammath  # noqa: E402
from camvideo.model.registry import load_model  # noqa: E402
from camvideo.smoothing import Smoother  # noqa: E402
from quality import machine, write_readme  # noqa: E402

HEADING = "## Localization: a low-confidence cue?"
THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
SIGNALS = ("probability", "margin", "certainty", "compactness")
Row = tuple[dict[str, float], bool, bool]   # signals, pointing hit, box IoU >= 0.5


def signals(probs: torch.Tensor, cls: int, drawn: torch.Tensor) -> dict[str, float]:
    """The candidate signals of one frame: class probabilities ``(K,)``, the shown class,
    its drawn map ``(h, w)`` in ``[0, 1]``."""
    top = probs.topk(2).values
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum())
    peak = float(drawn.max())
    spread = float((drawn >= 0.5 * peak).float().mean()) if peak > 0 else 1.0
    return dict(probability=float(probs[cls]), margin=float(top[0] - top[1]),
                certainty=-entropy, compactness=-spread)


def frame_rows(maps: torch.Tensor, probs: torch.Tensor, classes: list[int],
               truth: list[list[loc.Box]], size: tuple[int, int], t_box: float) -> list[Row]:
    """One row per frame with ground truth."""
    hits = loc.pointing_hits(loc.upsampled(maps, size), truth)
    boxes = [cammath.map_bbox(m, size, t_box) for m in maps.float().numpy()]
    fits = [s >= 0.5 for s in loc.box_scores(boxes, truth)]
    keep = [t for t, gts in enumerate(truth) if gts]
    return [(signals(probs[t], classes[t], maps[t].float()), h, f)
            for t, h, f in zip(keep, hits, fits)]


@torch.inference_mode()
def still_rows(model, t_box: float) -> list[Row]:
    weight = model.weight.detach().float()
    rows: list[Row] = []
    for size in ((640, 360), (480, 480)):
        hw = model.input_size(size[1], size[0])
        for img, box, _ in loc.calibration_frames(size):
            x, _ = model.preprocess(torch.from_numpy(img[None]), hw)
            feats, logits = model(x)
            probs = logits.float().softmax(dim=1)
            cls = probs.argmax(dim=1)
            m = cammath.minmax_normalize(cammath.cam_maps(feats.float(), weight, cls))
            rows += frame_rows(m, probs, cls.tolist(), [[box]], size, t_box)
    return rows


def clip_rows(model, args, size, t_box: float) -> list[Row]:
    weight = model.weight.detach().float()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, bench in loc.make_clips(Path(tmp), args.frames, size, args.fps).items():
            smoother = Smoother(weight)
            out = [smoother.push(f, lg, times, f01.float() / 255)
                   for f, lg, times, f01 in loc.clip_outputs(model, bench, args)]
            out.append(smoother.flush())
            maps = torch.cat([s.maps for s in out])
            probs = torch.cat([s.probs for s in out])
            classes = [c for s in out for c in s.classes.tolist()]
            rows += frame_rows(maps, probs, classes, bench.truth, size, t_box)
            print(name, len(rows), flush=True)
    return rows


def auroc(scores: list[float], labels: list[bool]) -> float:
    """The chance that a frame with the label scores above one without (ties: half)."""
    s, lab = np.asarray(scores), np.asarray(labels, bool)
    pos, neg = s[lab], s[~lab]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(np.mean([(p > neg).mean() + 0.5 * (p == neg).mean() for p in pos]))


def _pct(rows: list[Row], i: int) -> str:
    return f"{100 * np.mean([r[i] for r in rows]):.0f}%" if rows else "-"


def tables(sets: dict[str, list[Row]]) -> str:
    lines = ["| set | frames | pointing | box IoU >= 0.5 | "
             + " | ".join(f"AUROC {s} (pointing / box)" for s in SIGNALS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(SIGNALS)]
    for name, rows in sets.items():
        aucs = [f"{auroc([r[0][s] for r in rows], [r[1] for r in rows]):.2f} / "
                f"{auroc([r[0][s] for r in rows], [r[2] for r in rows]):.2f}"
                for s in SIGNALS]
        lines.append(f"| {name} | {len(rows)} | {_pct(rows, 1)} | {_pct(rows, 2)} | "
                     + " | ".join(aucs) + " |")
    lines += ["", "| set | cue below P | frames marked | pointing: marked / not | "
              "box IoU >= 0.5: marked / not |", "|---|---:|---:|---:|---:|"]
    for name, rows in sets.items():
        for p in THRESHOLDS:
            lo = [r for r in rows if r[0]["probability"] < p]
            hi = [r for r in rows if r[0]["probability"] >= p]
            lines.append(f"| {name} | {p:g} | {100 * len(lo) / len(rows):.0f}% | "
                         f"{_pct(lo, 1)} / {_pct(hi, 1)} | {_pct(lo, 2)} / {_pct(hi, 2)} |")
    return "\n".join(lines)


FINDINGS = """What the figures say (written at the run of 2026-11-30):

- **No cue.** A cue keyed on the shown class's probability would mark the wrong frames.
  On the stills the probability does not tell a map on the object from one beside it
  (AUROC 0.51 for pointing): the stills under 10 % point at the object on every frame,
  the rest on 81 % (`flower`'s "daisy" at 6 % is on the flower, `rocket`'s "missile" at
  24 % beside it). On the clips it tells a little (0.68), because the clips that miss
  (the real scene, the small object, the fast dolly's first frames) are also ones with
  low probabilities; but a cue under 10 % would mark 63 % of their frames, 88 % of which
  point at the object. For the boxes it is near chance on both sets (0.62, 0.55).
- The other signals do no better: the margin over the runner-up is near chance on the
  clips (0.57, boxes 0.47); the class distribution's certainty tells pointing on the
  clips (0.70) but not on the stills (0.53), and boxes weakly on both (0.61, 0.62); the
  map's compactness tells pointing on the stills (0.72) and the reverse on the clips
  (0.43). None separates good maps from bad on both sets, so no low-confidence cue was
  added: the label already prints the shown class's probability (`espresso 3%`), the
  number such a cue would hide behind a threshold."""


def report(tab: str, args, seconds: float, model, load: float) -> str:
    t = cammath.bbox_threshold("auto", model.calibration_name)
    return (f"{HEADING}\n\n`python benchmarks/confidence.py --readme"
            f"{' --cache DIR' if args.cache else ''}`: the localization stills (per-frame "
            "maps, top-1 probability) and clips (default smoothing, the shown class's "
            f"smoothed probability) of {model.name}; boxes at the calibrated {t}. AUROC: "
            "the chance that a frame whose map points at the object (or whose box fits) "
            "scores higher on the signal than one whose map does not (0.5: no better than "
            f"chance). {machine()}, AVX2 only, KVM (1-minute load average {load:.1f} at "
            f"the start), torch {torch.__version__}; {seconds:.0f} s in all.\n\n{tab}\n\n"
            f"{FINDINGS}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=90, help="frames per clip")
    ap.add_argument("--size", default="640x360", help="clip size WxH")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--cache", type=Path, help="reuse model outputs saved in this folder "
                    "(by localization.py --cache)")
    ap.add_argument("--readme", action="store_true", help="write the section to README.md")
    args = ap.parse_args(argv)
    args.fine = False   # what loc.clip_outputs keys its cache by
    load = os.getloadavg()[0]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    model = load_model()
    t_box = cammath.bbox_threshold("auto", model.calibration_name)
    t0 = time.perf_counter()
    sets = {"stills": still_rows(model, t_box), "clips": clip_rows(model, args, size, t_box)}
    tab = tables(sets)
    print(tab)
    if args.readme:
        write_readme(report(tab, args, time.perf_counter() - t0, model, load), HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
