"""Tests of the I420 path (camvideo.pixels): frames kept in YUV 4:2:0 from decoder to encoder.

The I420 path must give what the RGB path gives: the same layout as PyAV's, the same
colours as OpenCV's conversion, the same annotations, pixels within conversion rounding,
and lossless round trips through the encoder; inputs it cannot take stay RGB.
"""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch

from camvideo import api, pixels
from camvideo.media import files as media
from camvideo.testing import synth
from camvideo.media.files import FileSource
from camvideo.media.frames import Frame
from camvideo.media.sink import FileSink
from camvideo.pixels import resize_u8
from camvideo.render import Renderer
from camvideo.testing.clip import write_clip


def photo(h: int, w: int, name: str = "chelsea") -> np.ndarray:
    return np.ascontiguousarray(cv2.resize(synth.load_photo(name), (w, h),
                                           interpolation=cv2.INTER_AREA))


def i420_of(vf: av.VideoFrame) -> np.ndarray:
    return vf.to_ndarray(format="yuv420p")


def averaged_i420(rgb: np.ndarray) -> list[np.ndarray]:
    """Reference planes of an RGB picture: every pixel's Y, U, V by OpenCV's conversion,
    chroma averaged over each 2×2 block (OpenCV's own RGB → I420 takes the top-left
    pixel's chroma instead)."""
    h, w, _ = rgb.shape
    y, u, v = (c.reshape(h, w).astype(float) for c in pixels.yuv_of_rgb(rgb.reshape(-1, 3)))
    return [y] + [c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v)]


# ---------------------------------------------------------------------------------------
# layout and colours


@pytest.mark.parametrize("h, w", [(46, 50), (48, 64), (2, 2), (722, 1282)])
def test_planes_are_pyav_planes(h, w):
    """``planes`` views the same bytes PyAV puts in each plane (also where H/2 is odd,
    so the chroma planes do not start on a row of the array)."""
    rng = np.random.default_rng(h * w)
    vf = av.VideoFrame(w, h, "yuv420p")
    want = []
    for p, (ph, pw) in zip(vf.planes, [(h, w), (h // 2, w // 2), (h // 2, w // 2)]):
        data = rng.integers(0, 256, (ph, pw), dtype=np.uint8)
        rows = np.frombuffer(p, np.uint8).reshape(ph, p.line_size)
        rows[:, :pw] = data
        want.append(data)
    img = i420_of(vf)
    assert img.shape == (h * 3 // 2, w) and pixels.size(img, pixels.I420) == (h, w)
    for got, exp in zip(pixels.planes(img), want):
        assert np.array_equal(got, exp)
        assert np.shares_memory(got, img)  # views, not copies


def bt601(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range Y'CbCr of ``(N, 3)`` RGB, from the standard's matrix."""
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                  [112.0, -93.786, -18.214]]) / 255.0
    return rgb.astype(float) @ m.T + (16, 128, 128)


def test_colours_are_bt601_limited_range():
    """``yuv_of_rgb`` gives what ``from_rgb`` gives a flat area; both are BT.601
    limited range (the standard's matrix, and swscale's conversion, within rounding:
    red is not blue), and ``to_rgb`` takes them back."""
    rng = np.random.default_rng(1)
    colours = np.concatenate((np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0], [0, 0, 0],
                                        [255, 255, 255]], np.uint8),
                              rng.integers(0, 256, (32, 3), dtype=np.uint8)))
    y, u, v = pixels.yuv_of_rgb(colours)
    got = np.stack((y, u, v), axis=1).astype(int)
    assert np.abs(got - bt601(colours)).max() <= 1
    assert tuple(got[0]) == (82, 90, 240) and tuple(got[1]) == (41, 240, 110)  # red, blue
    assert tuple(got[3]) == (16, 128, 128) and tuple(got[4]) == (235, 128, 128)
    for c, yy, uu, vv in zip(colours, y, u, v):
        flat = np.ascontiguousarray(np.broadcast_to(c, (4, 6, 3)))
        py, pu, pv = pixels.planes(pixels.from_rgb(flat))
        assert (py == yy).all() and (pu == uu).all() and (pv == vv).all()
        sws = pixels.planes(i420_of(av.VideoFrame.from_ndarray(flat, "rgb24")
                                 .reformat(format="yuv420p")))
        assert all(abs(int(p[0, 0]) - int(q)) <= 1 for p, q in zip(sws, (yy, uu, vv)))
        back = pixels.to_rgb(pixels.from_rgb(flat))[0, 0].astype(int)
        assert np.abs(back - c).max() <= 3


@pytest.mark.parametrize("size", [(224, 384), (448, 768), (720, 1280)])
def test_model_input_from_i420_matches_the_rgb_route(size):
    """The model's small RGB input made from the planes (no full-size RGB picture) is
    the RGB route's (convert, then antialiased resize) within conversion rounding."""
    rgb = photo(720, 1280)
    img = pixels.from_rgb(rgb)
    ref = resize_u8(torch.from_numpy(pixels.to_rgb(img))[None].permute(0, 3, 1, 2),
                    size)[0].permute(1, 2, 0).numpy()
    got = pixels.resize_rgb(img, size)
    assert got.shape == (*size, 3) and got.dtype == np.uint8
    d = np.abs(got.astype(int) - ref.astype(int))
    assert d.mean() < 1.5 and np.percentile(d, 99.9) <= 12


def test_read_and_write_rgb_touch_only_their_box():
    img = pixels.from_rgb(photo(90, 160))
    keep = img.copy()
    box = pixels.even_box(11, 7, 60, 33, 90, 160)
    assert box == (10, 6, 60, 34)
    part = pixels.read_rgb(img, box)
    assert part.shape == (28, 50, 3)
    part[:] = (255, 0, 0)
    pixels.write_rgb(img, box, part)
    y, u, v = pixels.planes(img)
    ky, ku, kv = pixels.planes(keep)
    red = [int(c[0]) for c in pixels.yuv_of_rgb(np.array([[255, 0, 0]], np.uint8))]
    assert (y[6:34, 10:60] == red[0]).all() and (u[3:17, 5:30] == red[1]).all()
    outside = np.ones(y.shape, bool)
    outside[6:34, 10:60] = False
    assert np.array_equal(y[outside], ky[outside])
    assert np.array_equal(u[:3], ku[:3]) and np.array_equal(v[17:], kv[17:])


# ---------------------------------------------------------------------------------------
# rendering


@pytest.mark.parametrize("layout", ["overlay", "side"])
def test_i420_render_equals_rgb_render(layout):
    """Blending plane by plane gives the RGB renderer's picture (as the encoder would
    receive it) within rounding, and the same annotations; the input is not changed."""
    labels = [f"class {i}" for i in range(5)]
    r = Renderer(labels, topk=3, bbox=True, layout=layout)
    g = torch.Generator().manual_seed(0)
    rgb = [photo(180, 320), photo(180, 320, "coffee")]
    maps = torch.rand(2, 6, 10, generator=g)
    probs = torch.softmax(torch.randn(2, 5, generator=g), 1)
    classes = probs.argmax(1)
    frames = [pixels.from_rgb(f) for f in rgb]
    before = [f.copy() for f in frames]
    ref, ref_notes = r.render([pixels.to_rgb(f) for f in frames], maps, probs, classes)
    got, notes = r.render(frames, maps, probs, classes)
    assert all(np.array_equal(a, b) for a, b in zip(frames, before))
    for a, b in zip(got, ref):
        w = 640 if layout == "side" else 320
        assert a.shape == (270, w) and b.shape == (180, w, 3)
        for i, (p, q) in enumerate(zip(pixels.planes(a), averaged_i420(b))):
            d = np.abs(p - q)
            # luma: rounding; chroma: the map sampled at each block's centre, not averaged,
            # and the box's antialiased edges drawn on each plane
            assert d.mean() < (0.5 if i == 0 else 1.5), i
            assert np.percentile(d, 99) <= (3 if i == 0 else 16), i
    assert [(n.cls, n.topk, n.peak, n.bbox) for n in notes] == \
        [(n.cls, n.topk, n.peak, n.bbox) for n in ref_notes]
    if layout == "side":  # the left half is the frame (a box's antialiased edge aside)
        y_out, y_in = pixels.planes(got[0])[0], pixels.planes(frames[0])[0]
        assert np.array_equal(y_out[:, :156], y_in[:, :156])


# ---------------------------------------------------------------------------------------
# decoding and encoding


def test_file_source_yields_i420_frames_as_decoded(pan_clip):
    rgb_frames = list(FileSource(pan_clip.path))
    frames = list(FileSource(pan_clip.path, i420=True))
    assert len(frames) == len(rgb_frames) == pan_clip.frames
    with av.open(str(pan_clip.path)) as c:
        decoded = [i420_of(vf) for vf in c.decode(video=0)]
    for f, r, d in zip(frames, rgb_frames, decoded):
        assert f.fmt == pixels.I420 and r.fmt == pixels.RGB
        assert f.size == r.size == (180, 320)
        assert np.array_equal(f.image, d)  # no conversion at all
        assert (f.pts, f.time) == (r.pts, r.time)
        diff = np.abs(f.rgb().astype(int) - r.image.astype(int))
        assert diff.mean() < 2  # OpenCV's and swscale's conversions round differently


def test_inputs_the_i420_path_cannot_take_stay_rgb(odd_clip, tmp_path):
    """Odd sizes (4:4:4), 10-bit, full-range ("JPEG") 4:2:0 and rotated video are
    converted to RGB as before."""
    rgb = [photo(64, 96)] * 3
    clips = [odd_clip.path,
             write_clip(tmp_path / "10bit.mkv", rgb, pix_fmt="yuv420p10le").path,
             write_clip(tmp_path / "rot.mp4", rgb, rotation=90).path]
    full = tmp_path / "full.mkv"
    with av.open(str(full), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuvj420p"
        for i, img in enumerate(rgb):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    clips.append(full)
    for path in clips:
        frames = list(FileSource(path, i420=True))
        assert frames and all(f.fmt == pixels.RGB and f.image.ndim == 3 for f in frames), path


def test_i420_frames_are_encoded_losslessly(tmp_path):
    """An I420 frame reaches x264 as it is (no conversion): lossless settings give it
    back bit for bit; RGB frames still work in the same file."""
    rng = np.random.default_rng(3)
    src = write_clip(tmp_path / "in.mp4", [photo(46, 96)] * 2)
    info = FileSource(src.path).info
    # 96x46: H/2 odd, so the chroma planes do not start on a row of the array
    frames = [rng.integers(0, 256, (69, 96), dtype=np.uint8) for _ in range(4)]
    rgb = photo(46, 96, "coffee")
    out = tmp_path / "out.mkv"
    sink = FileSink(out, info, (96, 46), crf=0, x264_params="qp=0")
    for i, img in enumerate(frames):
        sink.write(img, i, i / 30)
    sink.write(rgb, 4, 4 / 30)
    sink.close()
    with av.open(str(out)) as c:
        back = [i420_of(vf) for vf in c.decode(video=0)]
    assert len(back) == 5
    for a, b in zip(back, frames):
        assert np.array_equal(a, b)
    assert np.array_equal(back[4], pixels.from_rgb(rgb))  # converted once, as before


def test_annotate_i420_path_equals_rgb_path(pan_clip, tmp_path, monkeypatch):
    """End to end (fp32): the I420 path and the RGB path give the same frames,
    timestamps and classes, and maps within what the two conversions' rounding moves."""
    def run(tag: str) -> tuple[list[dict], list[np.ndarray]]:
        out, side = tmp_path / f"{tag}.mkv", tmp_path / f"{tag}.jsonl"
        api.annotate(pan_clip.path, out, json=str(side), json_cams=True, precision="fp32",
                     overwrite=True, audio=False)
        import json
        recs = [json.loads(line) for line in side.read_text().splitlines()]
        with av.open(str(out)) as c:
            return recs, [vf.to_ndarray(format="rgb24") for vf in c.decode(video=0)]

    fast, fast_px = run("i420")
    plain_init = media.FileSource.__init__
    monkeypatch.setattr(media.FileSource, "__init__",
                        lambda self, path, **kw: plain_init(self, path, threads=0))
    plain, plain_px = run("rgb")
    assert len(fast) == len(plain) == len(fast_px) == len(plain_px) == pan_clip.frames
    assert [r["time"] for r in fast] == [r["time"] for r in plain]
    assert [r["class"] for r in fast] == [r["class"] for r in plain]
    cams = [np.abs(np.array(a["cam"]) - np.array(b["cam"])).max()
            for a, b in zip(fast, plain)]
    assert max(cams) < 0.1
    diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(fast_px, plain_px)]
    assert max(diff) < 4


def test_frame_rgb_and_size():
    rgb = photo(48, 64)
    f = Frame(0, pixels.from_rgb(rgb), 0, 0.0, pixels.I420)
    assert f.size == (48, 64) and f.rgb().shape == (48, 64, 3)
    g = Frame(0, rgb, 0, 0.0)
    assert g.fmt == pixels.RGB and g.size == (48, 64) and g.rgb() is rgb


def test_model_input_from_i420_on_a_device_matches_resize_rgb():
    """The GPU path converts I420 for the model with tensor operations in float: within
    a few levels of the CPU path (which rounds to uint8 twice), both ways of resizing."""
    import cv2
    import torch

    from camvideo import pixels
    from camvideo.testing import synth

    img = cv2.resize(synth.load_photo("chelsea"), (320, 180))
    i420 = pixels.from_rgb(img)
    batch = torch.from_numpy(np.stack([i420, i420]))
    y, u, v = pixels.tensor_planes(batch)
    assert torch.equal(pixels.tensor_i420(y, u, v), batch)
    for size in ((112, 192), (160, 288)):  # luma halved / chroma doubled
        got = pixels.model_input_from_i420(batch, size)
        ref = torch.from_numpy(pixels.resize_rgb(i420, size)).permute(2, 0, 1).float() / 255
        assert got.shape == (2, 3, *size) and got.dtype == torch.float32
        d = (got[0] - ref).abs() * 255
        assert float(d.max()) <= 4 and float(d.mean()) <= 1


def test_to_host_on_the_cpu_returns_the_tensors_own_memory():
    import torch

    from camvideo.transfer import to_host

    a, b = torch.arange(6).view(2, 3), torch.rand(4)
    ha, hb = to_host([a, b])
    a[0, 0] = 99
    assert ha[0, 0] == 99 and np.array_equal(hb, b.numpy())  # views, not copies
    assert to_host([]) == []
