"""The package's top: the names people import, loaded on first use."""

from __future__ import annotations

import subprocess
import sys

import emotalk_core


def test_the_top_exposes_the_api(tiny_model_dir, speech_wav):
    from emotalk_core import Controls, Predictor, load_model
    from emotalk_core.controls import Controls as home

    assert Controls is home
    predictor = Predictor(load_model(tiny_model_dir), device="cpu")
    out = predictor.predict(speech_wav, fps=24, controls=Controls(level=0.5))
    assert out.values.shape[1] == 52 and out.fps == 24.0
    assert set(emotalk_core.__all__) <= set(dir(emotalk_core))


def test_importing_the_package_or_its_controls_loads_no_torch():
    script = ("import sys, emotalk_core; from emotalk_core import Controls; Controls(level=0.5); "
              "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_an_unknown_name_is_an_attribute_error():
    try:
        emotalk_core.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("emotalk_core.NoSuchThing did not raise")
