"""Sound strip timing -> the audible window in the sound file and the scene frames it keys.

bpy-free so the arithmetic is tested without Blender: `strips.py` copies a strip's numbers into
a `StripTiming` and everything else happens here.

A sound strip's source starts at timeline frame `content_start` (`frame_start` before Blender
5.2) and is shown between the handles `left_handle` .. `right_handle` (`frame_final_start` ..
`frame_final_end`, end exclusive). The sound plays `sound_offset` seconds into the file at the
source start, so scene frame f plays second `(f - content_start) / fps + sound_offset`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPSILON = 1e-6  # seconds; below any sample period, above float noise


class TimingError(ValueError):
    """A strip whose audible part cannot be animated (trimmed to nothing, outside its sound)."""


@dataclass(frozen=True)
class StripTiming:
    """The numbers of one sound strip, as read from bpy (names as in Blender 5.2)."""

    name: str
    content_start: float  # timeline frame where the sound file's start sits
    left_handle: int  # first visible frame
    right_handle: int  # one past the last visible frame
    sound_offset: float = 0.0  # seconds into the file at content_start
    sound_duration: float | None = None  # seconds, when known
    content_end: float | None = None  # timeline frame where the sound file ends, when known


@dataclass(frozen=True)
class AudioWindow:
    """What to ask the backend for, and where the keys go.

    `start`/`end` are seconds of the sound file (`end` None: to the end of the file); key i goes
    on scene frame `first_frame + i` for i < `frame_count`, and holds the audio at
    `start + i / fps`.
    """

    start: float
    end: float | None
    first_frame: int
    frame_count: int

    @property
    def last_frame(self) -> int:
        """The last keyed frame (inclusive)."""
        return self.first_frame + self.frame_count - 1


def scene_fps(fps: int, fps_base: float) -> float:
    """Blender's real frame rate: 24000/1001 is stored as fps 24, fps_base 1.001, and must not
    be rounded to 23.976 or keys drift by a frame every ~40 s."""
    if fps <= 0 or not fps_base or fps_base <= 0 or not math.isfinite(fps_base):
        raise TimingError(f"invalid scene frame rate {fps} / {fps_base}")
    return fps / fps_base


def audible_window(strip: StripTiming, fps: float) -> AudioWindow:
    """The strip's visible part as seconds of its sound file plus the frames to key.

    Frames whose time falls before the file's start (a negative sound offset) are skipped,
    and so are frames past the file's end when its duration is known: keys cover only audio.
    """
    left, right = int(strip.left_handle), int(strip.right_handle)
    if right <= left:
        raise TimingError(f"strip '{strip.name}' is trimmed to zero length")
    start = (left - strip.content_start) / fps + strip.sound_offset
    first = left
    if start < -EPSILON:  # visible part begins before the sound: start keys where sound starts
        skip = math.ceil(-start * fps - EPSILON)
        first, start = left + skip, start + skip / fps
    start = max(0.0, start)
    end: float | None = (right - strip.content_start) / fps + strip.sound_offset
    if strip.content_end is not None and right >= strip.content_end:
        end = None  # not trimmed at the end: to the file's end, whatever rounding did to it
    duration = strip.sound_duration
    if duration is not None:
        if start >= duration - EPSILON:
            raise TimingError(f"strip '{strip.name}' shows none of its sound "
                              f"(its visible part starts after the {duration:.2f} s file ends)")
        if end is None or end >= duration - EPSILON:
            right = min(right, first + math.ceil((duration - start) * fps - EPSILON))
            end = None
    if right <= first or (end is not None and end <= start + EPSILON):
        raise TimingError(f"strip '{strip.name}' shows none of its sound")
    return AudioWindow(start=start, end=end, first_frame=first, frame_count=right - first)


def check_overlaps(windows: list[tuple[str, AudioWindow]]) -> None:
    """Two strips keyed onto the same frames would overwrite each other: refuse, naming them."""
    spans = sorted(windows, key=lambda item: item[1].first_frame)
    for (name_a, a), (name_b, b) in zip(spans, spans[1:], strict=False):
        if b.first_frame <= a.last_frame:
            raise TimingError(f"strips '{name_a}' and '{name_b}' overlap on frames "
                              f"{b.first_frame}-{min(a.last_frame, b.last_frame)}; "
                              "select strips that do not overlap in time")
