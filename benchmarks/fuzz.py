"""Byte-mutation fuzzing of the file pipeline (the suite runs a bounded version of it:
tests/test_fuzz.py).

Each case mutates a small clip (with audio) — flipped bytes, overwritten runs, cut or
duplicated chunks — and runs ``camvideo.annotate`` on it. A case passes when it either
writes a decodable output or raises a ``CamVideoError`` (the CLI's one-line error), and
leaves no temporary file. Anything else is a crash.

    python benchmarks/fuzz.py --cases 3000 [--seed 0]
"""
from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from camvideo import annotate
from camvideo.testing import synth
from camvideo.errors import CamVideoError
from camvideo.model.cammodel import CamModel
from camvideo.model.registry import from_modules


def tiny_model() -> CamModel:
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 32, stride=32), torch.nn.ReLU())
    return from_modules(backbone, torch.nn.Linear(8, 5), labels=list("abcde"))


def seed_clip(folder: Path, ext: str = ".mp4") -> bytes:
    frames, _ = synth.pan_frames("chelsea", (64, 48), 8)
    clip = synth.write_clip(folder / f"seed{ext}", frames, fps=8, audio=True, gop=4)
    return clip.path.read_bytes()


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of ``data``: flips, an overwritten run, a cut or a copy."""
    b = bytearray(data)
    kind = int(rng.integers(0, 4))
    n = len(b)
    if kind == 0:                                  # flip a few random bytes
        for pos in rng.integers(0, n, int(rng.integers(1, 16))):
            b[pos] ^= int(rng.integers(1, 256))
    elif kind == 1:                                # overwrite a run
        pos, size = int(rng.integers(0, n)), int(rng.integers(1, 512))
        b[pos:pos + size] = rng.integers(0, 256, min(size, n - pos), dtype=np.uint8).tobytes()
    elif kind == 2:                                # cut a chunk out
        pos, size = int(rng.integers(0, n)), int(rng.integers(1, 2048))
        del b[pos:pos + size]
    else:                                          # duplicate a chunk
        pos, size = int(rng.integers(0, n)), int(rng.integers(1, 2048))
        b[pos:pos] = b[pos:pos + size]
    return bytes(b)


def run_case(data: bytes, folder: Path, model: CamModel, ext: str = ".mp4") -> str:
    """Run one input; returns ``"ok"`` or ``"refused: <reason>"``, raises on a crash."""
    src, out = folder / f"case{ext}", folder / "out.mp4"
    src.write_bytes(data)
    out.unlink(missing_ok=True)
    try:
        annotate(src, out, model=model, smooth=0.3, overwrite=True, batch_size=4)
    except CamVideoError as e:
        outcome = "refused: " + str(e).split(":")[0]
        assert not out.exists(), "output left after a refusal"
    else:
        with av.open(str(out)) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n > 0, "output has no frames"
        outcome = "ok"
    leftovers = [p.name for p in folder.iterdir() if "partial" in p.name]
    assert not leftovers, f"temporary files left: {leftovers}"
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ext", default=".mp4", help="container of the seed clip")
    args = p.parse_args(argv)
    logging.getLogger("camvideo").setLevel(logging.ERROR)
    rng = np.random.default_rng(args.seed)
    model = tiny_model()
    outcomes: collections.Counter[str] = collections.Counter()
    crashes = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = seed_clip(folder, args.ext)
        for i in range(args.cases):
            case = mutate(data, rng)
            try:
                outcomes[run_case(case, folder, model, args.ext)] += 1
            except Exception as e:  # noqa: BLE001 - a crash: record it
                crashes.append((i, f"{type(e).__name__}: {e}"))
                (Path(tempfile.gettempdir()) / f"camvideo-crash-{i}{args.ext}").write_bytes(case)
    dt = time.monotonic() - t0
    print(f"{args.cases} cases ({args.ext} seed, {len(data)} bytes) in {dt:.0f} s")
    for outcome, n in outcomes.most_common():
        print(f"  {n:5d}  {outcome}")
    print(f"  {len(crashes):5d}  crashes")
    for i, msg in crashes[:20]:
        print(f"    case {i}: {msg}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
