"""The "EmoTalk" sidebar tab of the 3D Viewport: target and mapping, audio, emotion, style,
post-processing, and the Animate button with its progress and Cancel."""

from __future__ import annotations

import bpy

from . import checks, operators, properties, strips, transcripts

UNMATCHED_SHOWN = 60  # all 52 fit; the bound only keeps the layout finite


class _Base:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EmoTalk"


class EMOTALK_PT_main(_Base, bpy.types.Panel):
    bl_idname = "EMOTALK_PT_main"
    bl_label = "EmoTalk"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        run = context.window_manager.emotalk_run
        if run.running:
            _progress(layout, run)
            layout.operator("emotalk.cancel", icon="CANCEL")
            return
        layout.scale_y = 1.4
        layout.operator("emotalk.animate_from_audio", icon="SPEAKER")
        layout.scale_y = 1.0
        reason = operators.unavailable_reason(context)
        if reason:
            _message(layout, reason, "INFO")


def _message(layout: bpy.types.UILayout, text: str, icon: str) -> None:
    """A message over as many labels as it needs (labels do not wrap), the icon on the first."""
    col = layout.column(align=True)
    for index, line in enumerate(checks.panel_lines(text)):
        col.label(text=line, icon=icon if index == 0 else "BLANK1")


def _progress(layout: bpy.types.UILayout, run) -> None:
    text = run.message or "working"
    if hasattr(layout, "progress"):  # 4.0+
        layout.progress(factor=run.progress, type="BAR", text=text)
    else:
        layout.label(text=f"{run.progress:.0%} {text}")


class EMOTALK_PT_target(_Base, bpy.types.Panel):
    bl_label = "Target"
    bl_parent_id = "EMOTALK_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        obj = operators.target_object(context)
        if obj is None:
            layout.label(text="Select a mesh with shape keys", icon="ERROR")
            return
        layout.label(text=obj.name, icon="OUTLINER_OB_MESH")
        if not operators.shape_key_names(obj):
            layout.label(text="No shape keys", icon="ERROR")
            return
        mapping = operators.object_mapping(obj)
        icon = "CHECKMARK" if not mapping.unmatched else "INFO"
        layout.label(text=f"{mapping.matched_count} of 52 channels matched "
                          f"({len(mapping.by_key)} shape keys)", icon=icon)
        if mapping.viseme_count:  # a viseme rig: its lips follow the visemes, not ARKit keys
            layout.label(text=f"{mapping.viseme_count} visemes matched (lip sync)",
                         icon="CHECKMARK")
        for warning in operators.target_warnings(obj, mapping) if mapping else ():
            _message(layout, warning, "ERROR")
        settings = context.scene.emotalk
        if mapping.unmatched:
            layout.prop(settings, "show_unmatched")
            if settings.show_unmatched:
                col = layout.box().column(align=True)
                for name in mapping.unmatched[:UNMATCHED_SHOWN]:
                    col.label(text=name)
        _overrides(layout, obj)


def _overrides(layout: bpy.types.UILayout, obj: bpy.types.Object) -> None:
    box = layout.box()
    row = box.row()
    row.label(text="Overrides")
    row.operator("emotalk.override_add", text="", icon="ADD")
    key = obj.data.shape_keys
    for index, item in enumerate(obj.emotalk_overrides):
        row = box.row(align=True)
        row.prop_search(item, "shape_key", key, "key_blocks", text="")
        row.prop(item, "channel", text="")
        row.operator("emotalk.override_remove", text="", icon="X").index = index


class EMOTALK_PT_audio(_Base, bpy.types.Panel):
    bl_label = "Audio"
    bl_parent_id = "EMOTALK_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        sequencer = strips.sequencer_scene(context)
        if sequencer is not None and sequencer != context.scene:
            layout.label(text=f"Strips of the sequencer's scene '{sequencer.name}'",
                         icon="SEQUENCE")
        selection = strips.sound_selection(sequencer)
        if not selection.picks:
            layout.label(text="No sound strip selected", icon="INFO")
        col = layout.column(align=True)
        for pick in selection.picks:  # the frames where each is heard
            col.label(text=f"{pick.name}: frames {pick.left}-{pick.right - 1}", icon="SOUND")
        for note in selection.notes():
            col.label(text=note, icon="MUTE_IPO_ON")
        active = strips.active_sound_strip(sequencer)
        layout.prop(context.scene.emotalk, "recognize_words")
        _transcript(layout, active)
        _line(layout, active)
        layout.operator("emotalk.add_audio", icon="FILE_SOUND")


def _transcript(layout: bpy.types.UILayout, strip) -> None:
    """The active sound strip's Transcript field, and what an empty one means."""
    if strip is None:
        return
    box = layout.box()
    box.label(text=f"Transcript of '{strip.name}'", icon="TEXT")
    box.prop(strip, transcripts.PROPERTY, text="")
    hint = transcripts.panel_hint(strips.transcript_text(strip), strips.sound_path(strip))
    if hint:
        box.label(text=hint)


def _line(layout: bpy.types.UILayout, strip) -> None:
    """The active sound strip's own emotion and style, or that it follows the panel."""
    line = getattr(strip, properties.LINE_PROPERTY, None) if strip is not None else None
    if line is None:
        return
    box = layout.box()
    row = box.row()
    row.label(text=f"This Line: '{strip.name}'", icon="SOUND")
    row.prop(line, "use_own")
    if not line.use_own:
        box.label(text="Follows the Emotion and Personal Style panels")
        return
    box.operator("emotalk.line_from_panel", icon="PASTEDOWN")
    _emotion_fields(box, line)
    _style_fields(box, line)


def _emotion_fields(layout: bpy.types.UILayout, settings) -> None:
    """The panel's or a line's emotion and intensity (the same names on both)."""
    layout.prop(settings, "emotion_source", text="Source")
    if settings.emotion_source == "preset":
        layout.prop(settings, "preset")
    elif settings.emotion_source == "reference":
        layout.prop(settings, "reference")
    row = layout.row()
    row.enabled = settings.emotion_source != "audio"
    row.prop(settings, "strength")
    layout.prop(settings, "level")


def _style_fields(layout: bpy.types.UILayout, settings) -> None:
    layout.prop(settings, "person")
    layout.prop(settings, "use_second_person")
    col = layout.column()
    col.enabled = settings.use_second_person
    col.prop(settings, "second_person")
    col.prop(settings, "person_mix")


def _own_line_note(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Says that the active strip does not take these settings, lest edits here seem ignored."""
    strip = strips.active_sound_strip(strips.sequencer_scene(context))
    if properties.own_line(strip) is not None:
        layout.label(text=f"'{strip.name}' has its own (Audio > This Line)", icon="INFO")


class EMOTALK_PT_emotion(_Base, bpy.types.Panel):
    bl_label = "Emotion"
    bl_parent_id = "EMOTALK_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        _own_line_note(self.layout, context)
        _emotion_fields(self.layout, context.scene.emotalk)


class EMOTALK_PT_style(_Base, bpy.types.Panel):
    bl_label = "Personal Style"
    bl_parent_id = "EMOTALK_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        _own_line_note(self.layout, context)
        _style_fields(self.layout, context.scene.emotalk)


class EMOTALK_PT_postprocess(_Base, bpy.types.Panel):
    bl_label = "Post-processing"
    bl_parent_id = "EMOTALK_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.emotalk
        layout.prop(settings, "smooth")
        row = layout.row(align=True)
        row.prop(settings, "blinks")
        sub = row.row(align=True)
        sub.enabled = settings.blinks
        sub.prop(settings, "seed")
        layout.prop(settings, "clamp")
        layout.prop(settings, "mouth_amplitude")


class EMOTALK_PT_output(_Base, bpy.types.Panel):
    bl_label = "Keys"
    bl_parent_id = "EMOTALK_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        settings = context.scene.emotalk
        layout.prop(settings, "write_mode", text="")
        row = layout.row(align=True)
        row.prop(settings, "reduce_keys")
        sub = row.row(align=True)
        sub.enabled = settings.reduce_keys
        sub.prop(settings, "key_tolerance")


CLASSES = (EMOTALK_PT_main, EMOTALK_PT_target, EMOTALK_PT_audio, EMOTALK_PT_emotion,
           EMOTALK_PT_style, EMOTALK_PT_postprocess, EMOTALK_PT_output)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
