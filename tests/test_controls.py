"""The controls' one definition: validation, the JSON form, the add-on panel's form and the
comparison the headless bake uses."""

from __future__ import annotations

import json

import pytest

from emotalk_core import controls
from emotalk_core.controls import Controls, EmotionControl, PostProcess
from emotalk_core.errors import ControlError

VARIED = (
    Controls(),
    Controls(emotion=EmotionControl("preset", preset="happy", strength=0.5), level=0.25,
             person=3, person_weights={3: 0.75, 7: 0.25},
             postprocess=PostProcess(blinks=False, seed=4, mouth_amplitude=1.5)),
    Controls(emotion=EmotionControl("reference", reference="take2.wav"), postprocess=None),
    Controls(postprocess=PostProcess(articulate=False, clamp=False)),
    Controls(recognize_words=False),
)


@pytest.mark.parametrize("given", VARIED)
def test_json_form_round_trips(given):
    text = json.dumps(given.to_dict())  # what goes over the wire
    assert Controls.from_dict(json.loads(text)) == given


def test_default_json_is_the_documented_defaults():
    data = Controls().to_dict()
    assert data["emotion"] == {"source": "audio", "strength": 1.0}
    assert data["level"] == 1.0 and data["person"] == 0 and "person_weights" not in data
    assert data["postprocess"] == {"smooth": True, "blinks": True, "seed": 0, "clamp": True,
                                   "mouth_amplitude": 1.0, "articulate": True}
    # on (the default), it is left out: servers that predate it reject unknown keys
    assert "recognize_words" not in data
    assert Controls(recognize_words=False).to_dict()["recognize_words"] is False


def test_recognize_words_is_a_boolean_everywhere():
    with pytest.raises(ControlError,
                       match="recognize_words must be true or false, got the text 'yes'"):
        Controls.from_dict({"recognize_words": "yes"})
    off = Controls(recognize_words=False)
    assert controls.panel_values(off)["recognize_words"] is False
    assert controls.panel_values(Controls())["recognize_words"] is True
    assert controls.from_panel({"recognize_words": False}) == off
    assert controls.from_panel({}) == Controls()
    assert controls.differences(Controls(), off) == ["recognize_words"]


def test_default_panel_equals_emotalk_predict():
    assert controls.from_panel({}) == Controls()


def test_panel_mix_and_preset():
    c = controls.from_panel(dict(
        emotion_source="preset", preset="happy", strength=0.5, level=0.25, person=3,
        use_second_person=True, second_person=7, person_mix=0.25, blinks=False, seed=4,
        mouth_amplitude=1.5))
    assert c.emotion.preset == "happy" and c.emotion.strength == 0.5 and c.level == 0.25
    assert c.person_weights == {3: 0.75, 7: 0.25}
    assert not c.postprocess.blinks and c.postprocess.seed == 4
    same = controls.from_panel(dict(person=3, use_second_person=True, second_person=3))
    assert same.person_weights is None
    assert controls.from_panel(dict(person=3, use_second_person=True, second_person=5,
                                    person_mix=1.0)).to_dict()["person_weights"] == {"5": 1.0}
    off = controls.from_panel(dict(person=3, use_second_person=False, second_person=5))
    assert off.person_weights is None


def test_panel_ignores_a_preset_or_reference_the_source_does_not_use():
    c = controls.from_panel(dict(emotion_source="audio", preset="sad", reference="x.wav"))
    assert c.emotion == EmotionControl()


@pytest.mark.parametrize("given", [*VARIED[:2], VARIED[-1]])
def test_panel_form_round_trips(given):
    assert controls.differences(given, controls.from_panel(controls.panel_values(given))) == []


def test_panel_refuses_what_it_cannot_hold():
    with pytest.raises(ControlError, match="no emotion preset 'gleeful'"):
        controls.panel_values(Controls(emotion=EmotionControl("preset", preset="gleeful")))
    with pytest.raises(ControlError, match="at most two styles"):
        controls.panel_values(Controls(person_weights={1: 1.0, 2: 1.0, 3: 1.0}))
    with pytest.raises(ControlError, match=f"styles 0..{controls.NUM_STYLES - 1}"):
        controls.panel_values(Controls(person=controls.NUM_STYLES))
    with pytest.raises(ControlError, match="too large for the panel"):
        controls.panel_values(Controls(postprocess=PostProcess(seed=2**31)))


def test_differences_name_the_settings():
    a = Controls(level=0.5, postprocess=PostProcess(seed=1))
    b = Controls(level=0.5 + 1e-8, postprocess=PostProcess(seed=2, smooth=False))
    assert controls.differences(a, b) == ["seed", "smooth"]
    # the seed matters only while blinks are on; weights only as shares
    quiet = PostProcess(blinks=False)
    assert controls.differences(Controls(postprocess=quiet),
                                Controls(postprocess=PostProcess(blinks=False, seed=9))) == []
    assert controls.differences(Controls(person_weights={1: 1.0, 2: 3.0}),
                                Controls(person_weights={1: 0.25, 2: 0.75})) == []


def test_command_line_person_weights():
    assert controls.parse_person_weights("3:0.5, 7:0.5") == {3: 0.5, 7: 0.5}
    assert controls.parse_person_weights("4") == {4: 1.0}
    assert controls.parse_person_weights(None) is None
    with pytest.raises(ControlError, match="cannot read 'x:1'"):
        controls.parse_person_weights("x:1")


def test_the_addon_copy_imports_without_the_package(tmp_path):
    """build_addon.py copies these modules into the extension: together they must import as a
    package of their own, with nothing from emotalk_core (which Blender's Python lacks)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import build_addon

    package = tmp_path / "addon_copy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = Path(controls.__file__).parent
    for name in build_addon.SHARED:
        shutil.copy(source / name, package / name)
    script = ("import sys; from addon_copy import client, controls; "
              "assert controls.from_panel({'level': 0.5}).level == 0.5; "
              "assert client.Client.__module__ == 'addon_copy.client'; "
              "print(sorted(m for m in sys.modules if m.startswith('emotalk')))")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_preset_or_reference_is_told_in_every_front_ends_words():
    for source, flag in (("preset", "--emotion NAME"), ("reference", "--emotion-reference FILE")):
        with pytest.raises(ControlError) as caught:
            EmotionControl(source)
        # the add-on and protocol clients show message and detail; the CLI adds its flag
        assert "--" not in caught.value.message and "--" not in caught.value.detail
        assert caught.value.cli_hint == f"add {flag}"
