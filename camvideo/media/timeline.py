"""Timestamps that start again: files joined end to end (``cat a.ts b.ts``, a camera's
chapters), whose second part counts from its own start. What follows a restart is moved
on after what came before (:class:`Restarts`); the video
(:class:`~camvideo.media.files.FileSource`) and its audio
(:class:`~camvideo.media.audio.AudioRemuxer`) are moved by the same amount, so each part
stays in step with itself.
"""
from __future__ import annotations

from fractions import Fraction

import av

#: A jump back of timestamps of at least this many seconds, or to the stream's first
#: timestamp or before, is the stream starting again; frames reordered by the decoder
#: (B-frames) are never this far out of place.
RESTART_S = 0.5
#: At most this many frames are out of display order in a video's timestamps.
MAX_REORDER = 8


def nominal_rate(container: av.container.InputContainer,
                 stream: av.video.stream.VideoStream) -> Fraction:
    """The video's frame rate as the timing works with it (frames per second)."""
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(30)
    cc = stream.codec_context
    if container.format.flags & av.format.Flags.no_timestamps.value and cc is not None \
            and cc.framerate:
        fps = cc.framerate  # e.g. the SPS timing of a raw .h264 file
    return Fraction(fps)


class Restarts:
    """Follows one stream's timestamps (in any unit: ticks or seconds) and says by how
    much to move each one on: a timestamp ``jump`` or more before the end of what came
    before, or back at the stream's first one while more than ``near`` before that end,
    starts the stream again, and from there on everything moves on to follow that end
    (or by a ``shift`` the caller gives: the video's, for its audio).

    Attributes:
        offset: what is added to the timestamps now.
        shifts: the offset after each restart so far, in order.
    """

    def __init__(self, jump, near) -> None:
        self.jump, self.near = jump, near
        self.first = self.end = None
        self.offset = 0
        self.shifts: list = []

    @classmethod
    def of_video(cls, step, second=1) -> "Restarts":
        """For a video's timestamps, frames ``step`` apart, in units of which ``second``
        make one second: a jump back of :data:`RESTART_S` or more (and beyond any
        reordering) starts again, as does one back to the first timestamp more than the
        reordering from the end (ends are a frame after the last timestamp)."""
        reorder = (MAX_REORDER + 1) * step
        return cls(jump=max(Fraction(RESTART_S) * second, reorder) + step, near=reorder)

    def starts_again(self, raw) -> bool:
        """Whether the timestamp ``raw`` (as read) starts the stream again."""
        if self.end is None:
            return False
        t = raw + self.offset
        return t < self.end - self.jump or (raw <= self.first and t < self.end - self.near)

    def see(self, raw, length, shift=None):
        """The next timestamp ``raw`` (as read) of something ``length`` long: its time,
        moved on (by ``shift`` instead of to the end so far, where it starts again)."""
        if self.first is None:
            self.first = raw
        if self.starts_again(raw):
            self.offset = self.end - raw if shift is None else shift
            self.shifts.append(self.offset)
        t = raw + self.offset
        self.end = t + length if self.end is None else max(self.end, t + length)
        return t
