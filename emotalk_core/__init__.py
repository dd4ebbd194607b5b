"""EmoTalk: speech-driven emotional 3D face animation as ARKit blendshape curves.

    from emotalk_core import Controls, EmotionControl, Predictor

    predictor = Predictor("default")  # or a model folder; load_model(...) reads one
    out = predictor.predict("line04.wav", fps=24,
                            controls=Controls(emotion=EmotionControl("preset", preset="happy")))
    out.values  # (frames, 52) float32, channel order out.channels

The names below load on first use, so `import emotalk_core` stays light (no torch) for the
command line's help, the stdio server's start and tools that only need the controls.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "Predictor": "inference",
    "Prediction": "inference",
    "load_model": "checkpoint",
    "Controls": "controls",
    "EmotionControl": "controls",
    "PostProcess": "controls",
    "EmoTalkError": "errors",
}
__all__ = ["__version__", *_HOMES]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
