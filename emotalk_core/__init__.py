"""EmoTalk: speech-driven emotional 3D face animation as ARKit blendshape curves."""

__version__ = "0.1.0"
