"""Which two classes to show on a frame with two objects: plain top-2, grouping by the
ImageNet (WordNet) hierarchy, or non-maximum suppression by map overlap
(:func:`camvideo.multiclass.distinct`, several thresholds).

Clips: two real photos side by side, each moving (:func:`camvideo.testing.synth.
pair_frames`, 384x192, 60 frames at 30 fps), for 8 pairs of the bundled photos. The
default model runs once per clip (default smoothing); every rule then chooses two classes
from the same smoothed probabilities and maps (the 20 most probable classes are the
candidates). A frame counts when the two chosen classes' peaks lie one in each object's
box. "reachable" is the share of frames where some two of the 20 candidates do.

The hierarchy rule reads WordNet 3.0 (the Debian package ``wordnet-base``:
``/usr/share/wordnet/data.noun``; ImageNet's classes are WordNet noun synsets, their ids
from timm's ``imagenet_synsets.txt``): a class is skipped when it and a chosen class have
a common hypernym at most ``hops`` steps above both. Without WordNet its rows are left
out.

    python benchmarks/distinct.py [--frames 60]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

import camvideo
from camvideo.multiclass import class_peak, distinct
from camvideo.model.registry import load_model
from camvideo.testing import synth

PAIRS = [("chelsea", "coffee"), ("coffee", "chelsea"), ("chelsea", "flower"),
         ("coffee", "china"), ("motorcycle", "chelsea"), ("flower", "rocket"),
         ("china", "motorcycle"), ("coffee", "flower")]
WORDNET = Path("/usr/share/wordnet/data.noun")


def hypernyms() -> dict[str, list[str]] | None:
    if not WORDNET.exists():
        return None
    out: dict[str, list[str]] = {}
    for line in WORDNET.open(encoding="latin-1"):
        if line.startswith("  "):
            continue
        f = line.split()
        i = 4 + 2 * int(f[3], 16)
        pointers, i = int(f[i]), i + 1
        hs = []
        for _ in range(pointers):
            sym, off, pos = f[i:i + 3]
            i += 4
            if sym in ("@", "@i") and pos == "n":
                hs.append(off)
        out[f[0]] = hs
    return out


def ancestors(hyper: dict[str, list[str]], off: str) -> dict[str, int]:
    depth, frontier = {off: 0}, [off]
    while frontier:
        nxt = []
        for o in frontier:
            for h in hyper.get(o, []):
                if h not in depth:
                    depth[h] = depth[o] + 1
                    nxt.append(h)
        frontier = nxt
    return depth


def synsets() -> list[str]:
    import timm.data

    path = Path(timm.data.__file__).parent / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    model = load_model()
    hyper = hypernyms()
    anc = [ancestors(hyper, s[1:]) for s in synsets()] if hyper else None

    def same_group(a: int, b: int, hops: int) -> bool:
        A, B = anc[a], anc[b]  # type: ignore[index]
        common = [max(A[k], B[k]) for k in A.keys() & B.keys()]
        return bool(common) and min(common) <= hops

    rules: dict[str, object] = {"top-2": 1.0}
    for t in (0.1, 0.2, 0.3, 0.5):
        rules[f"map overlap, IoU > {t}"] = t
    if anc is not None:
        for hops in (2, 3, 4):
            rules[f"WordNet, common hypernym ≤ {hops} up"] = hops
    results: dict[str, list[float]] = {k: [] for k in [*rules, "reachable"]}
    names = []
    with tempfile.TemporaryDirectory() as tmp:
        for a, b in PAIRS:
            clip = synth.make_clip("pair", Path(tmp) / f"{a}_{b}.mp4", size=(384, 192),
                                   n=args.frames, photos=(a, b))
            names.append(f"{a}+{b}")
            counts = {k: 0 for k in results}
            with camvideo.stream(clip.path, model, precision="fp32", topk=20) as res:
                for r, boxes in zip(res, clip.objects):
                    def maps(cls: torch.Tensor, r=r) -> torch.Tensor:
                        return torch.from_numpy(r.map_for(cls.tolist(), normalize=False))

                    p = torch.from_numpy(r.probs)
                    cand = [c for c, _, _ in r.topk]
                    peaks = {c: class_peak(m, clip.size)
                             for c, m in zip(cand, r.map_for(cand, normalize=False))}
                    on = [[c for c in cand if synth.in_box(peaks[c], bx)] for bx in boxes]
                    counts["reachable"] += bool(on[0] and on[1])
                    for name, v in rules.items():
                        if name.startswith("WordNet"):
                            chosen: list[int] = []
                            for c in cand:
                                if len(chosen) == 2:
                                    break
                                if not any(same_group(c, d, v) for d in chosen):  # type: ignore
                                    chosen.append(c)
                        else:
                            chosen = distinct(p, maps, 2, overlap=v)  # type: ignore[arg-type]
                        counts[name] += synth.one_peak_on_each([peaks.get(c) or class_peak(
                            r.map_for(c, normalize=False), clip.size) for c in chosen], boxes)
            for k in results:
                results[k].append(counts[k] / clip.frames)
            print(f"{a}+{b}: " + ", ".join(f"{k} {v[-1]:.0%}" for k, v in results.items()),
                  flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| rule | " + " | ".join(names) + " | mean |")
    print("|---|" + "---:|" * (len(names) + 1))
    for k, v in results.items():
        print(f"| {k} | " + " | ".join(f"{x:.0%}" for x in v) + f" | **{np.mean(v):.0%}** |")


if __name__ == "__main__":
    main()
