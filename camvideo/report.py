"""The HTML report of a run (``--report FILE.html``): one self-contained page per video,
and an index page for a batch (``camvideo batch --report-html DIR``).

:class:`HtmlReportSink` is a sink (``write`` each result, ``close``, ``abort``): it keeps
a few numbers per frame (the 10 most probable classes and their smoothed probabilities,
the shown classes) and a thumbnail at each class change and scene cut, never the frames,
so its memory stays small however long the video. The page holds everything inline:

- the whole video's class timeline as an SVG plot (the top classes' smoothed
  probabilities over time, in the shown classes' palette; scene cuts as dashed lines);
- the top classes with their screen time (how long each was shown);
- thumbnails (inline JPEG) at class changes and cuts, with their times;
- the run's settings.

A JSON summary (``<script type="application/json" id="camvideo-summary">``) makes the
page machine-readable; :func:`write_index` reads it back for the batch's index.
"""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .errors import OutputError
from .options import FrameResult, Options
from .render import PALETTE

__all__ = ["HtmlReportSink", "read_summary", "write_index"]

_TOP_STORED = 10       #: classes kept per frame for the plot
_PLOT_CLASSES = 5      #: classes plotted
_PLOT_BINS = 800       #: time bins of the plot (a long video is binned, max per bin)
_MAX_THUMBS = 60       #: thumbnails kept
_THUMB_W = 240         #: their width, pixels
_THUMB_GAP = 1.0       #: seconds between two thumbnails of class changes (cuts: always)


@dataclass
class _Thumb:
    time: float
    frame: int
    why: str
    labels: list[str]
    jpeg: bytes


@dataclass
class _Frames:
    """Per-frame numbers, grown in chunks (numpy)."""

    times: list[float] = field(default_factory=list)
    top_i: list[np.ndarray] = field(default_factory=list)    # (10,) int32 each
    top_p: list[np.ndarray] = field(default_factory=list)    # (10,) float32 each
    shown: list[tuple[int, ...]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)


class HtmlReportSink:
    """Writes the report page of one video (see the module's notes) on :meth:`close`
    (to a temporary file, then renamed; :meth:`abort` leaves nothing).

    Args:
        path: the page, ``.html``.
        labels: the model's class names.
        options: the run's settings (shown on the page).
        source: the input's name (the page's title).
        output: the annotated video's path, if any (linked, relative to the page).

    Raises:
        OutputError: the page cannot be written (checked when made: its folder).
    """

    def __init__(self, path: str | os.PathLike, labels: Sequence[str], options: Options,
                 *, source: str = "", output: str | None = None) -> None:
        self.path = Path(path)
        self.labels, self.options = list(labels), options
        self.source, self.output = source, output
        self._f = _Frames()
        self._thumbs: list[_Thumb] = []
        self._dropped = 0
        self._last_shown: tuple[int, ...] | None = None
        self._last_thumb = -1e9
        self._placed = False
        parent = self.path.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {self.path}: folder missing or not writable")

    # ------------------------------------------------------------------ sink
    def write(self, result: FrameResult) -> None:
        p = result.probs
        p = p.float().cpu().numpy() if hasattr(p, "cpu") else np.asarray(p, np.float32)
        k = min(_TOP_STORED, p.shape[0])
        idx = np.argpartition(-p, k - 1)[:k]
        self._f.times.append(float(result.time))
        self._f.top_i.append(idx.astype(np.int32))
        self._f.top_p.append(p[idx].astype(np.float32))
        shown = tuple(c.cls for c in result.classes) if result.classes else (result.cls,)
        self._f.shown.append(shown)
        if result.cut:
            self._f.cuts.append(len(self._f.times) - 1)
        changed = self._last_shown is not None and set(shown) != set(self._last_shown)
        why = ("start" if self._last_shown is None else "cut" if result.cut else
               "class change" if changed else "")
        self._last_shown = shown
        if why and (why != "class change" or result.time - self._last_thumb >= _THUMB_GAP):
            self._thumb(result, why, [self.labels[c] for c in shown])

    def _thumb(self, r: FrameResult, why: str, labels: list[str]) -> None:
        if len(self._thumbs) >= _MAX_THUMBS:
            self._dropped += 1
            return
        img = r.annotated() if r.image is not None else r.rgb
        if img is None:
            return
        h, w = img.shape[:2]
        small = cv2.resize(img, (_THUMB_W, max(1, round(h * _THUMB_W / w))),
                           interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            self._thumbs.append(_Thumb(r.time, r.index, why, labels, buf.tobytes()))
            self._last_thumb = r.time

    def close(self) -> None:
        if self._placed:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        try:
            tmp.write_text(self.page(), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._placed = True

    def abort(self) -> None:
        if self._placed:
            self.path.unlink(missing_ok=True)
        self._placed = True

    # ------------------------------------------------------------------ content
    def summary(self) -> dict:
        """The numbers the page shows: frames, duration, each class's screen time (s),
        the plotted classes."""
        t = np.asarray(self._f.times)
        n = len(t)
        dt = np.diff(t) if n > 1 else np.zeros(0)
        last = float(np.median(dt)) if len(dt) else 0.0
        dur = np.append(dt, last)                      # each frame lasts until the next
        screen: dict[int, float] = {}
        for d, shown in zip(dur, self._f.shown):
            for c in shown:
                screen[c] = screen.get(c, 0.0) + float(d)
        top = sorted(screen, key=lambda c: -screen[c])
        return {"source": self.source, "frames": n,
                "duration": float(t[-1] - t[0] + last) if n else 0.0,
                "shots": len(self._f.cuts),
                "screen_time": [{"class": c, "label": self.labels[c],
                                 "seconds": round(screen[c], 3)} for c in top],
                "plotted": [c for c in self._plotted(top)]}

    def _plotted(self, by_screen: list[int]) -> list[int]:
        """The classes the plot shows: the most shown ones, then the most probable on
        average, :data:`_PLOT_CLASSES` in all."""
        out = list(by_screen[:_PLOT_CLASSES])
        if len(out) < _PLOT_CLASSES and self._f.top_i:
            mean: dict[int, float] = {}
            for i, p in zip(self._f.top_i, self._f.top_p):
                for c, v in zip(i.tolist(), p.tolist()):
                    mean[c] = mean.get(c, 0.0) + v
            out += [c for c in sorted(mean, key=lambda c: -mean[c]) if c not in out]
        return out[:_PLOT_CLASSES]

    def series(self, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(times (B,), probs (B, n))``: the classes' probabilities over the video in
        at most :data:`_PLOT_BINS` time bins (the maximum in each; a class not among a
        frame's 10 most probable counts as 0 there)."""
        n = len(self._f.times)
        vals = np.zeros((n, len(classes)), np.float32)
        col = {c: j for j, c in enumerate(classes)}
        for f, (i, p) in enumerate(zip(self._f.top_i, self._f.top_p)):
            for c, v in zip(i.tolist(), p.tolist()):
                j = col.get(c)
                if j is not None:
                    vals[f, j] = v
        t = np.asarray(self._f.times, np.float64)
        if n <= _PLOT_BINS:
            return t, vals
        edges = np.linspace(0, n, _PLOT_BINS + 1).astype(int)
        return (np.array([t[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]),
                np.stack([vals[a:b].max(axis=0) for a, b in zip(edges[:-1], edges[1:])]))

    def svg(self, classes: Sequence[int], width: int = 960, height: int = 300) -> str:
        """The timeline plot as an inline SVG element."""
        left, right, top, bottom = 56, 16, 14, 36
        pw, ph = width - left - right, height - top - bottom
        t, vals = self.series(classes)
        t0 = float(t[0]) if len(t) else 0.0
        span = max(float(t[-1]) - t0, 1e-6) if len(t) else 1.0
        vmax = float(vals.max()) if vals.size else 0.0
        ymax = next((v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0) if vmax <= v * 1.001), 1.0)
        x = lambda s: left + (s - t0) / span * pw                          # noqa: E731
        y = lambda v: top + ph - v / ymax * ph                             # noqa: E731
        out = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
               f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
               f'aria-label="class probabilities over time">',
               f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
               f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f4f4f4" '
               f'stroke="#999999"/>']
        for k in range(5):                                  # y grid and labels
            v = ymax * k / 4
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                       f'stroke="#dddddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                       f'font-size="12" text-anchor="end" fill="#333">{v * 100:g}%</text>')
        step = _nice_step(span)
        s = 0.0
        while s <= span + 1e-9:                             # x ticks, seconds
            out.append(f'<line x1="{x(t0 + s):.1f}" x2="{x(t0 + s):.1f}" y1="{top + ph}" '
                       f'y2="{top + ph + 5}" stroke="#666"/><text x="{x(t0 + s):.1f}" '
                       f'y="{top + ph + 18}" font-size="12" text-anchor="middle" '
                       f'fill="#333">{s:g} s</text>')
            s += step
        for f in self._f.cuts[1:]:                          # scene cuts
            xc = x(self._f.times[f])
            out.append(f'<line class="cut" x1="{xc:.1f}" x2="{xc:.1f}" y1="{top}" '
                       f'y2="{top + ph}" stroke="#555" stroke-dasharray="4 3"/>')
        for j, c in enumerate(classes):
            rgb = "#%02x%02x%02x" % tuple(int(v) for v in PALETTE[j % len(PALETTE)])
            pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, vals[:, j]))
            out.append(f'<polyline class="series" fill="none" stroke="{rgb}" '
                       f'stroke-width="3" points="{pts}"><title>'
                       f'{html.escape(self.labels[c])}</title></polyline>')
        out.append("</svg>")
        return "".join(out)

    def page(self) -> str:
        """The whole page."""
        s = self.summary()
        plotted = s["plotted"]
        e = html.escape
        legend = "".join(
            f'<li><span class="sw" style="background:#%02x%02x%02x"></span>%s</li>'
            % (*(int(v) for v in PALETTE[j % len(PALETTE)]), e(self.labels[c]))
            for j, c in enumerate(plotted))
        dur = s["duration"] or 1.0
        rows = "".join(
            f'<tr><td>{e(r["label"])}</td><td>{r["class"]}</td><td>{r["seconds"]:.1f} s</td>'
            f'<td>{100 * r["seconds"] / dur:.0f}%</td></tr>' for r in s["screen_time"][:10])
        thumbs = "".join(
            f'<figure><img alt="frame {t.frame}" src="data:image/jpeg;base64,'
            f'{base64.b64encode(t.jpeg).decode()}"><figcaption>{t.time:.2f} s · '
            f'{e(t.why)}<br>{e(", ".join(t.labels))}</figcaption></figure>'
            for t in self._thumbs)
        if self._dropped:
            thumbs += f"<p>{self._dropped} more changes not shown.</p>"
        settings = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>"
                           for k, v in _settings(self.options).items())
        out_link = ""
        if self.output:
            rel = os.path.relpath(Path(self.output).absolute(), self.path.parent.absolute())
            out_link = f'<p>Annotated video: <a href="{e(rel)}">{e(rel)}</a></p>'
        data = json.dumps(s).replace("</", "<\\/")
        title = e(self.source or self.path.stem)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>camvideo: {title}</title>
<style>
body{{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:22px}} h2{{font-size:18px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
ul.legend{{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:16px}}
.sw{{display:inline-block;width:14px;height:14px;margin-right:6px;vertical-align:middle}}
.thumbs{{display:flex;flex-wrap:wrap;gap:10px}} figure{{margin:0;width:{_THUMB_W}px}}
figcaption{{font-size:12px}}
</style></head><body>
<h1>camvideo report: {title}</h1>
<p>{s["frames"]} frames, {s["duration"]:.2f} s, {max(0, s["shots"] - 1)} scene cut(s);
model {e(self.options.model)}.</p>{out_link}
<h2>Class timeline</h2>
<ul class="legend">{legend}</ul>
{self.svg(plotted)}
<h2>Top classes (screen time)</h2>
<table><tr><th>class</th><th>index</th><th>shown</th><th>share</th></tr>{rows}</table>
<h2>Class changes and cuts</h2>
<div class="thumbs">{thumbs}</div>
<h2>Settings</h2>
<table>{settings}</table>
<script type="application/json" id="camvideo-summary">{data}</script>
</body></html>
"""


def _nice_step(span: float) -> float:
    """A tick step giving 4 to 12 ticks over ``span`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 12:
            return float(step)
    return 7200.0


def _settings(options: Options) -> dict[str, Any]:
    """The options of the run, as shown (paths of other outputs left out)."""
    hidden = {"json", "tracks", "html_report", "overwrite"}
    return {k: getattr(options, k) for k in options.names() if k not in hidden}


def read_summary(page: str | os.PathLike) -> dict | None:
    """The JSON summary a report page holds (None: not a report page, or unreadable)."""
    try:
        text = Path(page).read_text(encoding="utf-8")
    except OSError:
        return None
    start = text.find('id="camvideo-summary">')
    if start < 0:
        return None
    start = text.index(">", start) + 1
    try:
        return json.loads(text[start:text.index("</script>", start)].replace("<\\/", "</"))
    except ValueError:
        return None


def write_index(folder: str | os.PathLike, entries: Sequence[dict]) -> Path:
    """The batch's index page ``folder/index.html``: one row per input (``entries``:
    ``input`` (relative name), ``status``, ``reason``, ``page`` (the report page's path,
    or None)), with its frames, duration and top classes read from its page.

    Returns:
        The index page's path.

    Raises:
        OutputError: it cannot be written.
    """
    root = Path(folder)
    e = html.escape
    rows = []
    for ent in entries:
        page = ent.get("page")
        summ = read_summary(page) if page and Path(page).is_file() else None
        name = e(str(ent["input"]))
        link = (f'<a href="{e(os.path.relpath(Path(page).absolute(), root.absolute()))}">'
                f'{name}</a>' if summ is not None else name)
        top = ", ".join(f'{e(r["label"])} ({r["seconds"]:.1f} s)'
                        for r in (summ or {}).get("screen_time", [])[:3])
        frames = summ["frames"] if summ else ""
        dur = f'{summ["duration"]:.1f} s' if summ else ""
        rows.append(f"<tr><td>{link}</td><td>{e(ent.get('status', ''))}</td><td>{frames}"
                    f"</td><td>{dur}</td><td>{top}</td><td>{e(ent.get('reason') or '')}"
                    f"</td></tr>")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>camvideo batch report</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}</style></head><body>
<h1>camvideo batch report</h1>
<table><tr><th>video</th><th>status</th><th>frames</th><th>duration</th>
<th>top classes (screen time)</th><th>reason</th></tr>{"".join(rows)}</table>
</body></html>
"""
    path = root / "index.html"
    tmp = root / f".index.html.{os.getpid()}.partial"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(doc, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path
