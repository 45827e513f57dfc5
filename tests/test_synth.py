"""Tests of camvideo.testing.synth and camvideo.testing.clip: write clips, read them back with PyAV,
compare with the Clip."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.testing import synth
from camvideo.testing.clip import Clip, write_clip


@dataclass
class Decoded:
    """What PyAV reads back from a clip."""

    times: list[float] = field(default_factory=list)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    frames: list[np.ndarray] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)
    video_time_base: object = None
    rotation: int = 0
    audio_streams: int = 0
    audio_seconds: float = 0.0
    audio_channels: int = 0
    audio_rate: int = 0


def decode(path: Path, keep_frames: bool = False) -> Decoded:
    out = Decoded()
    with av.open(str(path)) as c:
        out.video_time_base = c.streams.video[0].time_base
        out.audio_streams = len(c.streams.audio)
        for i, f in enumerate(c.decode(video=0)):
            out.times.append(float(f.pts * f.time_base))
            out.sizes.add((f.width, f.height))
            out.rotation = f.rotation
            if f.key_frame:
                out.keyframes.append(i)
            if keep_frames:
                out.frames.append(f.to_ndarray(format="rgb24"))
    if out.audio_streams:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            out.audio_channels, out.audio_rate = a.channels, a.sample_rate
            out.audio_seconds = sum(f.samples / f.sample_rate for f in c.decode(audio=0))
    return out


ALL_CLIPS = ["pan_clip", "vfr_clip", "odd_clip", "cuts_clip", "silent_clip"]


@pytest.mark.parametrize("name", ALL_CLIPS)
def test_readback_matches_clip(name: str, request: pytest.FixtureRequest) -> None:
    clip: Clip = request.getfixturevalue(name)
    got = decode(clip.path)
    assert len(got.times) == clip.frames == len(clip.times) == len(clip.boxes)
    assert got.sizes == {clip.size}
    np.testing.assert_allclose(got.times, clip.times, atol=1e-3)
    assert all(b > a for a, b in zip(got.times, got.times[1:]))
    assert clip.duration <= 2.0 and clip.size[0] <= 320
    assert (got.audio_streams == 1) == clip.has_audio


@pytest.mark.parametrize("name", ["pan_clip", "vfr_clip"])
def test_audio_lasts_the_whole_clip(name: str, request: pytest.FixtureRequest) -> None:
    clip: Clip = request.getfixturevalue(name)
    got = decode(clip.path)
    frame = 1 / clip.fps
    assert got.audio_channels == 2 and got.audio_rate in (44100, 48000)
    assert abs(clip.audio_seconds - clip.duration) < 1e-3
    assert abs(got.audio_seconds - clip.duration) <= frame


def test_silent_clip_has_no_audio(silent_clip: Clip) -> None:
    assert not silent_clip.has_audio and silent_clip.audio_seconds == 0
    assert decode(silent_clip.path).audio_streams == 0


def test_constant_rate_time_base(pan_clip: Clip) -> None:
    got = decode(pan_clip.path)
    assert pan_clip.fps == 30
    np.testing.assert_allclose(np.diff(got.times), 1 / 30, atol=1e-3)
    assert got.times[0] == 0


def test_vfr_gaps_preserved(vfr_clip: Clip, vfr_gaps: tuple[float, ...]) -> None:
    gaps = np.diff(decode(vfr_clip.path).times)
    expected = [vfr_gaps[i % len(vfr_gaps)] for i in range(len(gaps))]
    np.testing.assert_allclose(gaps, expected, atol=1e-3)
    assert len(set(np.round(gaps, 3))) == len(set(np.round(vfr_gaps, 3))) > 3


def test_odd_size_preserved(odd_clip: Clip) -> None:
    assert odd_clip.size == (319, 179)
    with av.open(str(odd_clip.path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (319, 179)
        assert s.codec_context.pix_fmt == "yuv444p"


def _inside(box, size) -> bool:
    x0, y0, x1, y1 = box
    return 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]


@pytest.mark.parametrize("name", ["pan_clip", "vfr_clip", "odd_clip", "cuts_clip",
                                  "silent_clip"])
def test_boxes_inside_frame(name: str, request: pytest.FixtureRequest) -> None:
    clip: Clip = request.getfixturevalue(name)
    assert all(b is not None and _inside(b, clip.size) for b in clip.boxes)


def test_pan_box_moves_across(pan_clip: Clip) -> None:
    xs = np.array([(b[0] + b[2]) / 2 for b in pan_clip.boxes])
    assert np.all(np.diff(xs) >= 0)                       # left to right, never back
    assert xs[-1] - xs[0] > 0.3 * pan_clip.size[0]
    assert np.abs(np.diff(xs)).max() < 0.1 * pan_clip.size[0]  # smooth, no jumps


def test_pan_box_tracks_the_photo(pan_clip: Clip) -> None:
    """The decoded pixels inside the box are the photo; far outside it, the backdrop."""
    got = decode(pan_clip.path, keep_frames=True)
    for i in (0, len(got.frames) // 2, len(got.frames) - 1):
        frame, (x0, y0, x1, y1) = got.frames[i].astype(np.float32), pan_clip.boxes[i]
        inside = frame[y0:y1, x0:x1]
        assert inside.std() > 20                           # textured cat, not a gradient
        outside = np.concatenate([frame[:, :max(0, x0 - 4)].reshape(-1, 3),
                                  frame[:, x1 + 40:].reshape(-1, 3)])
        # the backdrop is a smooth gradient: neighbouring pixels barely differ
        assert np.abs(np.diff(outside, axis=0)).mean() < 6


def test_cuts(cuts_clip: Clip) -> None:
    assert cuts_clip.cuts == [0, 16, 32]
    got = decode(cuts_clip.path, keep_frames=True)
    diffs = [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(got.frames, got.frames[1:])]
    jumps = sorted(np.argsort(diffs)[-2:] + 1)
    assert jumps == [16, 32]
    assert min(diffs[15], diffs[31]) > 5 * np.median(diffs)
    assert got.keyframes[:2] == [0, 8] and all(b - a <= 8 for a, b in
                                               zip(got.keyframes, got.keyframes[1:]))


def test_zoom_box_grows(silent_clip: Clip) -> None:
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in silent_clip.boxes]
    assert areas[-1] > areas[0]


@pytest.mark.parametrize("ext", [".mkv", ".mov", ".webm"])
def test_other_containers_and_rotation(ext: str, tmp_path: Path) -> None:
    times = [0.0, 0.04, 0.1, 0.125, 0.2, 0.3]
    clip = synth.make_clip("zoom", tmp_path / f"z{ext}", size=(96, 54), n=len(times),
                           times=times, audio=0.3, rotation=90)
    got = decode(clip.path)
    np.testing.assert_allclose(got.times, times, atol=1e-3)
    assert got.rotation == 90
    assert got.audio_streams == 1 and abs(got.audio_seconds - 0.3) < 0.03


def test_photos_and_object_boxes() -> None:
    for name in synth.PHOTOS:
        img = synth.load_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        if name in synth.OBJECT_BOXES:
            assert _inside(synth.OBJECT_BOXES[name], (img.shape[1], img.shape[0]))
    with pytest.raises(KeyError):
        synth.load_photo("dog")


def test_frame_sequence_is_lazy_and_indexable() -> None:
    frames, boxes = synth.pan_frames("coffee", (64, 36), 10, background="china")
    assert len(frames) == len(boxes) == 10
    assert frames[-1].shape == (36, 64, 3) and frames[-1].dtype == np.uint8
    assert not np.array_equal(frames[3], frames[4])          # each index its own frame
    assert np.array_equal(frames[-1], frames[9]) and np.array_equal(list(frames)[3], frames[3])
    assert [f.tobytes() for f in frames[2:5]] == [frames[i].tobytes() for i in (2, 3, 4)]
    with pytest.raises(IndexError):
        frames[10]


def test_write_clip_rejects_bad_input(tmp_path: Path) -> None:
    frames = [np.zeros((32, 32, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="increasing"):
        write_clip(tmp_path / "a.mp4", frames, times=[0, 0.1, 0.1])
    with pytest.raises(ValueError, match="times"):
        write_clip(tmp_path / "b.mp4", frames, times=[0, 0.1])
    with pytest.raises(ValueError, match="frame 1"):
        write_clip(tmp_path / "c.mp4", [frames[0], np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="kind"):
        synth.make_clip("spin", tmp_path / "d.mp4")


def test_short_audio_and_failed_write_leaves_nothing(tmp_path: Path) -> None:
    clip = synth.make_clip("pan", tmp_path / "short.mp4", size=(64, 36), n=30, audio=0.5)
    got = decode(clip.path)
    assert clip.duration == pytest.approx(1.0) and clip.audio_seconds == 0.5
    assert abs(got.audio_seconds - 0.5) < 0.03
    bad = tmp_path / "bad.mp4"
    with pytest.raises(ValueError):
        write_clip(bad, [np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)])
    assert not bad.exists()


def test_blob_is_where_its_centres_say(tmp_path: Path) -> None:
    """The moving disc: white (255) at each reported centre, its box around it, the
    backdrop darker than 200 outside; it crosses left to right at a constant speed."""
    frames, centres, boxes = synth.blob_frames((160, 64), 9, radius=6)
    xs = [x for x, _ in centres]
    assert np.allclose(np.diff(xs), np.diff(xs)[0]) and xs[0] < xs[-1]
    for frame, (x, y), box in zip(frames, centres, boxes):
        assert frame.shape == (64, 160, 3)
        assert (frame[round(y), round(x)] == 255).all()
        x0, y0, x1, y1 = box
        outside = frame.copy()
        outside[max(0, y0):y1, max(0, x0):x1] = 0
        assert outside.max() < 200
    clip = synth.make_clip("blob", tmp_path / "blob.mp4", size=(160, 64), n=9)
    assert clip.frames == 9 and clip.boxes == synth.blob_frames((160, 64), 9)[2]


def test_move_frames_boxes_are_the_placed_photos() -> None:
    """A dolly and two objects: each box holds its photo's pixels (the photo is a solid
    colour here, so its placement is exact), it grows as asked, and outside every box is
    the backdrop."""
    red = np.zeros((50, 100, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((40, 40, 3), np.uint8)
    blue[..., 2] = 255
    size, n = (160, 90), 5
    frames, boxes = synth.move_frames([(red, (0.2, 0.6), ((0.3, 0.3), (0.35, 0.5))),
                                       (blue, (0.3, 0.3), ((0.85, 0.7), (0.8, 0.7)))],
                                      size, n)
    assert len(frames) == len(boxes) == n and all(len(b) == 2 for b in boxes)
    heights = [b[0][3] - b[0][1] for b in boxes]
    assert heights[0] == round(0.2 * 90) and heights[-1] == round(0.6 * 90)
    assert all(a < b for a, b in zip(heights, heights[1:]))          # grows, eased
    for i in (0, n - 1):
        img = frames[i].astype(int)
        for (x0, y0, x1, y1), ch in zip(boxes[i], (0, 2)):
            core = img[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
            assert (core[..., ch] > 240).all() and (core[..., 1] < 15).all()
        outside = np.ones(img.shape[:2], bool)
        for x0, y0, x1, y1 in boxes[i]:
            outside[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False
        assert (np.abs(img[outside][:, 0] - img[outside][:, 2]) < 40).all()  # grey backdrop
    # centres follow the given path (fractions of the frame)
    (x0, y0, x1, y1) = boxes[-1][0]
    assert abs((x0 + x1) / 2 - 0.35 * 160) <= 1 and abs((y0 + y1) / 2 - 0.5 * 90) <= 1


def test_zoom_frames_start_pans_to_the_object() -> None:
    frames, boxes = synth.zoom_frames("flower", (160, 90), 8, zoom=(1.5, 2.0),
                                      start=(0.9, 0.2))
    box = synth.OBJECT_BOXES["flower"]
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes if b is not None]
    # the view starts right of the dahlia (it sits left of centre) and ends on it
    assert centres[0][0] < 80 - 10
    assert abs(centres[-1][0] - 80) <= 2 and abs(centres[-1][1] - 45) <= 2
    # the last box is the object at 2x the cover scale
    s = max(160 / 640, 90 / 427) * 2.0
    b = boxes[-1]
    assert abs((b[2] - b[0]) - s * (box[2] - box[0])) <= 2 or b[2] == 160 or b[0] == 0


def test_scene_boxes_lie_inside_their_photos() -> None:
    for photo, objs in synth.SCENE_BOXES.items():
        img = synth.load_photo(photo)
        assert len(objs) >= 2
        for box in objs.values():
            assert _inside(box, (img.shape[1], img.shape[0]))


def test_pair_frames_two_moving_objects_with_exact_boxes():
    frames, boxes = synth.pair_frames(("chelsea", "coffee"), (384, 192), 30)
    assert len(frames) == len(boxes) == 30 and all(len(b) == 2 for b in boxes)
    cup = synth.load_photo("coffee")
    for i in (0, 15, 29):
        (a, b), img = boxes[i], frames[i]
        assert img.shape == (192, 384, 3)
        assert a[2] <= 192 <= b[0]                   # each object keeps its half
        for x0, y0, x1, y1 in (a, b):
            assert 0 <= x0 < x1 <= 384 and 0 <= y0 < y1 <= 192
            assert img[y0:y1, x0:x1].std() > 20      # a photo, not the backdrop
    # the right box is the cup photo's object box, scaled: the cup's rim (white) and the
    # dark coffee sit inside it, the box is as big as the scaled object box
    s = round(192 * 0.55) / cup.shape[0]
    ob = synth.OBJECT_BOXES["coffee"]
    b = boxes[0][1]
    assert abs((b[2] - b[0]) - (ob[2] - ob[0]) * s) <= 2
    assert abs((b[3] - b[1]) - (ob[3] - ob[1]) * s) <= 2
    # both move: the left one right and up-down, the right one left
    assert boxes[-1][0][0] > boxes[0][0][0] and boxes[-1][1][0] < boxes[0][1][0]
    ys = [bx[0][1] for bx in boxes]
    assert max(ys) - min(ys) >= 20


def test_make_clip_pair_records_both_boxes(tmp_path):
    clip = synth.make_clip("pair", tmp_path / "p.mp4", size=(192, 96), n=6)
    assert clip.frames == 6 and len(clip.objects) == 6 and len(clip.objects[0]) == 2
    assert clip.boxes == [o[0] for o in clip.objects]
