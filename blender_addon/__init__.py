"""EmoTalk for Blender: speech -> 52 ARKit blendshape curves -> shape-key keyframes.

Registration only. The bpy modules are imported inside `register` so that the bpy-free modules
(`mapping`, `timing`, `backend`, `transcripts`) import and test without Blender.
"""

from __future__ import annotations


def _modules() -> list:
    from . import operators, panels, preferences, properties

    return [preferences, properties, operators, panels]  # registration order


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
