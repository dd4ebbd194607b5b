"""The bpy side of `emotalk bake` and `emotalk demo`: Blender work that runs in the PyPI bpy
module, in the same Python as emotalk_core and torch, and drives the installed extension exactly
as an animator's button press does.

Not part of the extension zip (build_addon.py leaves this folder out): it needs emotalk_core,
which Blender's own Python does not have. Its modules import bpy inside functions only, so
`emotalk_core.cli` imports them lazily and `import blender_addon.headless.bake` works without
bpy.

    blender   bpy, the installed add-on, Blender's output, opening and saving files
    panel     command-line controls <-> the add-on's panel settings
    bake      `emotalk bake`: the batch, its worker process, one file's steps
    demo      `emotalk demo`: the demo head baked with two settings, pictures and curves
    head      the procedural demo head (emotalk_core.head) as a Blender object, contact sheets
"""
