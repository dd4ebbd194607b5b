"""Per-line settings without Blender: a strip's own emotion and style over the panel's
post-processing, the report's words for what each line got, and a bake job that sends each
request's own controls (against the real stdio server with the tiny model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blender_addon import backend, line_settings
from emotalk_core import controls as controls_module
from emotalk_core.controls import Controls, EmotionControl, PostProcess
from emotalk_core.inference import Predictor
from tests.conftest import speechlike

# The scene's settings that every line shares: post-processing and where phones come from.
SCENE_ONLY = {"smooth", "blinks", "seed", "clamp", "mouth_amplitude", "recognize_words"}


def panel(**changes) -> dict:
    """The panel's values (`properties.PANEL_SETTINGS`) for the default controls, changed."""
    values = controls_module.panel_values(Controls())
    values.update(second_person=1, person_mix=0.5, preset="happy", reference=None)
    return {**values, **changes}


# -- the merge ------------------------------------------------------------------------------------
def test_a_line_holds_every_panel_setting_but_the_scenes():
    names = set(panel())
    assert set(line_settings.LINE_SETTINGS) == names - SCENE_ONLY
    assert len(line_settings.LINE_SETTINGS) == len(set(line_settings.LINE_SETTINGS))


def test_without_own_settings_a_line_gets_the_panels():
    scene = panel(level=0.5, seed=4)
    assert line_settings.merged(scene, None) == scene
    assert line_settings.merged(scene, None) is not scene  # the caller's dict stays as it was


def test_own_settings_replace_emotion_and_style_and_keep_the_scenes_post_processing():
    scene = panel(level=0.5, person=1, smooth=False, seed=4, mouth_amplitude=1.5)
    # A line's post-processing fields, were it to have any, are not taken.
    line = panel(emotion_source="preset", preset="happy", strength=0.8, level=0.25, person=3,
                 smooth=True, seed=9, mouth_amplitude=0.5)
    values = line_settings.merged(scene, line)
    got = Controls.from_dict(controls_module.from_panel(values).to_dict())
    assert got == Controls(emotion=EmotionControl("preset", strength=0.8, preset="happy"),
                           level=0.25, person=3,
                           postprocess=PostProcess(smooth=False, seed=4, mouth_amplitude=1.5))
    assert scene["level"] == 0.5 and scene["emotion_source"] == "audio"


def test_a_line_mixing_two_styles():
    line = panel(person=3, use_second_person=True, second_person=7, person_mix=0.25)
    got = controls_module.from_panel(line_settings.merged(panel(), line))
    assert got.person_weights == {3: 0.75, 7: 0.25}


def test_a_line_missing_a_setting_is_an_error_not_the_panels_value():
    line = panel()
    del line["level"]
    with pytest.raises(KeyError, match="level"):
        line_settings.merged(panel(), line)


# -- the report's words ---------------------------------------------------------------------------
def sent(**changes) -> dict:
    """The controls as sent: the panel's values, changed, through the one panel form."""
    return controls_module.from_panel(panel(**changes)).to_dict()


HEARD = {"neutral": 0.33, "happy": 0.32, "sad": 0.35}


def test_each_line_says_its_emotion_intensity_and_style():
    applied = [line_settings.Applied("A", sent(emotion_source="preset", preset="happy",
                                               strength=0.8, person=3), own=True, heard=HEARD),
               line_settings.Applied("B", sent(), heard=HEARD)]
    assert line_settings.summary(applied) == (
        "A (own): preset happy 80%, intensity 1, style 3; "
        "B: speech emotion sad 35%, intensity 1, style 0")


@pytest.mark.parametrize(("changes", "heard", "words"), [
    ({}, {}, "speech emotion, intensity 1, style 0"),  # a backend that sent no probabilities
    ({"level": float(np.float32(0.3))}, HEARD, "speech emotion sad 35%, intensity 0.3, style 0"),
    ({"level": 0.0, "person": 23}, HEARD, "speech emotion sad 35%, intensity 0, style 23"),
    ({"emotion_source": "reference", "reference": "/clips/calm take.wav", "strength": 0.5},
     HEARD, "reference calm take.wav 50%, intensity 1, style 0"),
    ({"emotion_source": "preset", "preset": "angry", "strength": 0.0}, HEARD,
     "preset angry 0%, intensity 1, style 0"),
    ({"person": 3, "use_second_person": True, "second_person": 7, "person_mix": 0.3}, {},
     "speech emotion, intensity 1, styles 3 70% + 7 30%"),
    ({"person": 7, "use_second_person": True, "second_person": 3, "person_mix": 0.3}, {},
     "speech emotion, intensity 1, styles 3 30% + 7 70%"),
])
def test_wording(changes, heard, words):
    assert line_settings.describe(line_settings.Applied("A", sent(**changes),
                                                        heard=heard)) == words


def test_a_mix_with_no_share_is_one_style():
    assert line_settings.describe(line_settings.Applied(
        "A", {"level": 1.0, "person": 3, "person_weights": {"3": 1.0, "7": 0.0}})) \
        == "speech emotion, intensity 1, style 3"


def test_no_lines_no_words():
    assert line_settings.summary([]) == ""


# -- the bake job sends each request's own controls -----------------------------------------------
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lines-audio") / "line.wav"
    sf.write(path, speechlike(2.0, seed=11), 16000)
    return path


def test_each_request_with_own_controls_gets_them_and_the_others_the_jobs(
        tiny_model_dir, clip, tmp_path):
    job_controls = Controls(level=0.5, person=1, postprocess=PostProcess(seed=2)).to_dict()
    own = Controls(emotion=EmotionControl("preset", strength=0.8, preset="happy"), level=0.25,
                   person=3, postprocess=PostProcess(seed=2)).to_dict()
    requests = [backend.AnimateRequest("strip 'A'", str(clip), 0.25, 1.5, 30, 24.0, None, own),
                backend.AnimateRequest("strip 'B'", str(clip), 0.25, 1.5, 30, 24.0)]
    settings = backend.BackendSettings(sys.executable, str(tiny_model_dir), "cpu")
    server = backend.Backend(settings, tmp_path / "backend.log")
    try:
        results = backend.BakeJob(server, requests, job_controls).run()
    finally:
        server.close()
    predictor = Predictor(tiny_model_dir, device="cpu")
    for controls, got in zip((own, job_controls), results, strict=True):
        want = predictor.predict(clip, start=0.25, end=1.5, fps=24.0,
                                 controls=Controls.from_dict(controls)).values
        np.testing.assert_allclose(got.values, want[:30], atol=1e-5)
    assert np.abs(results[0].values - results[1].values).max() > 1e-3
