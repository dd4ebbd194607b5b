"""The bundled default model: what it is, that it is small, and that it animates real speech.

The quality bar itself (lip-closure AUC on held-out real speech) is measured by
`python -m training.default_model` and recorded in emotalk_core/weights/default/metrics.json;
these tests check the properties a user sees on the bundled real-speech clip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from blender_addon.headless import demo
from emotalk_core import arkit, checkpoint
from emotalk_core.config import PRESET_NAMES, compact_model_config
from emotalk_core.controls import Controls, EmotionControl
from emotalk_core.head import build_head
from emotalk_core.inference import Predictor
from training import metrics as M

MODEL_DIR = checkpoint.DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor("default", device="cpu")


def _curves(predictor: Predictor, preset: str, level: float = 1.0) -> np.ndarray:
    controls = Controls(emotion=EmotionControl(source="preset", preset=preset), level=level,
                        postprocess=None)
    return predictor.predict(demo.DEMO_CLIP, controls=controls).values


def test_it_is_the_compact_recipe_stored_small(predictor):
    assert predictor.model.config == compact_model_config()
    assert predictor.presets == PRESET_NAMES and predictor.model.config.num_persons == 24
    weights = MODEL_DIR / checkpoint.WEIGHTS_FILE
    assert weights.stat().st_size < 10_000_000  # "a few MB" in git
    with safe_open(str(weights), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4
               for p in predictor.model.parameters())  # runs in float32


def test_the_model_card_numbers_are_its_own():
    metrics = json.loads((MODEL_DIR / "metrics.json").read_text(encoding="utf-8"))
    card = (MODEL_DIR.parent / "README.md").read_text(encoding="utf-8")
    lip = metrics["real_val"]["lip_closure"]
    assert lip["bilabial_frames"] >= 100
    for value in (lip["auc_model"], lip["auc_energy_baseline"]):
        assert f"{value:.3f}" in card
    # lip sync as users get it, from the audio alone (recognised words, phone loop)
    sync = metrics["lip_sync"]["real_val"]
    for scorer in ("model", "model_loop"):
        assert f"| **{sync[scorer]['auc']:.3f}** | **{sync[scorer]['closure_rate']:.2f}** |" in card
    for name, mm in metrics["preset_upper_face_mm"].items():
        assert f"{name} {mm:.2f}" in card


def test_the_mouth_follows_the_speech(predictor):
    curves = _curves(predictor, "neutral", level=0.0)
    assert curves.shape == (120, 52)  # 4.0 s at 30 fps
    aperture = M.aperture(curves)
    jaw = curves[:, arkit.CHANNELS.index("jawOpen")]
    assert jaw.max() - jaw.min() > 0.2 and aperture.max() - aperture.min() > 0.25
    # the lead-in before the first word (0.2 s) is quieter than the speech: mouth nearer closed
    assert aperture[:5].mean() < np.percentile(aperture, 75)


def test_presets_change_the_upper_face(predictor):
    head = build_head("medium")
    neutral = _curves(predictor, "neutral")
    moved = {name: M.mesh_eve(head, _curves(predictor, name), neutral)
             for name in ("happy", "sad", "angry", "surprised")}
    assert min(moved.values()) > 0.5, moved  # mm of eye/brow vertices, mean over frames
    brows = [arkit.CHANNELS.index(n) for n in ("browInnerUp", "browDownLeft", "browDownRight")]
    sad, angry = _curves(predictor, "sad")[:, brows], _curves(predictor, "angry")[:, brows]
    assert np.abs(sad.mean(0) - angry.mean(0)).max() > 0.05


def test_the_recipe_builds_known_real_sources_with_the_held_out_recordings():
    from training import default_model, real_speech

    assert set(default_model.REAL_SOURCES) <= set(real_speech.SOURCES)
    # the held-out recordings that the model card reports must be built, and never trained on
    assert real_speech.DEFAULT_SPLITS["mfa"] == "val" and "mfa" in default_model.REAL_SOURCES
