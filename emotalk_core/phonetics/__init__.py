"""The phonetic stream: what is said, as ARPAbet phones with times, from the audio alone or from
the line's text.

- `phonemes`: the phone set (ARPAbet without stress digits, plus "SIL") and espeak-ng's mapping;
- `espeak`: espeak-ng through ctypes (pronunciations, and the synthetic corpus's speech);
- `align`: forced alignment of a transcript (pocketsphinx, en-us model inside its wheel);
- `loop`: phones of any speech without a transcript: the phone loop (pocketsphinx `allphone`),
  and the worker processes that decode and align long audio;
- `recognize`: the words of English speech without a transcript (Whisper tiny.en), aligned
  like a transcript;
- `track`: phones with times -> the per-frame phone track at 30 fps that compact models read.

`phone_track(samples, transcript)` is what inference calls: forced alignment when a transcript
is given (falling back with a warning when it fails), else recognised words when asked for (as
`Controls` asks by default), else the phone loop.
"""

from __future__ import annotations

from .track import PhoneTrack, frame_phones, phone_track, track_classes

__all__ = ["PhoneTrack", "frame_phones", "phone_track", "track_classes"]
