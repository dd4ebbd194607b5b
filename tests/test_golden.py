"""The released EmoTalk network, reproduced: the shared golden fixture goes through the same
import path (`emotalk import-official`) that a real EmoTalk.pth takes."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from emotalk_core.checkpoint import load_model
from emotalk_core.cli import main as cli_main
from emotalk_core.model import frame_counts, level_weights, one_hot_weights

from .conftest import GOLDEN

TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason="shared golden fixture not present")


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    sys.path.insert(0, str(GOLDEN))
    try:
        from fill_rule import fill_state_dict
    finally:
        sys.path.remove(str(GOLDEN))
    tmp = tmp_path_factory.mktemp("golden")
    cases = json.loads((GOLDEN / "cases.json").read_text())
    keys = json.loads((GOLDEN / "keys.json").read_text())
    state = {k: torch.from_numpy(v) for k, v in fill_state_dict(keys).items()}
    torch.save(state, tmp / "EmoTalk.pth")
    (tmp / "content").mkdir()
    (tmp / "emotion").mkdir()
    w2v = cases["wav2vec2_config"]
    (tmp / "content" / "config.json").write_text(json.dumps(w2v))
    emotion = dict(w2v, num_labels=cases["emotion_num_labels"])
    (tmp / "emotion" / "config.json").write_text(json.dumps(emotion))
    code = cli_main([
        "import-official", "--checkpoint", str(tmp / "EmoTalk.pth"),
        "--content-encoder", str(tmp / "content"),
        "--emotion-encoder", str(tmp / "emotion" / "config.json"), "--out", str(tmp / "model"),
    ])  # fmt: skip
    assert code == 0
    net = load_model(tmp / "model").model
    return net, cases, np.load(GOLDEN / "inputs.npz"), np.load(GOLDEN / "outputs.npz")


def _clip(inputs, name):
    audio = torch.from_numpy(inputs[name])[None]
    return audio, torch.tensor([audio.shape[1]])


def test_encoders_match_release(golden):
    net, cases, inputs, outputs = golden
    for case in cases["cases"]:
        x = case["output"].split("_")[1]
        audio, lengths = _clip(inputs, case["audio"])
        frames = frame_counts(lengths)
        with torch.no_grad():
            content = net.encode_content(audio, lengths, frames)[0].numpy()
            emotion, logits = net.encode_emotion(audio, lengths, frames)
        np.testing.assert_allclose(content, outputs[f"content_hidden_{x}"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(
            emotion[0].numpy(), outputs[f"emotion_hidden_{x}"], atol=TOLERANCE, rtol=0
        )
        np.testing.assert_allclose(
            logits[0].numpy(), outputs[f"emotion_logits_{x}"], atol=TOLERANCE, rtol=0
        )


def test_inference_matches_release(golden):
    net, cases, inputs, outputs = golden
    for case in cases["cases"]:
        audio, lengths = _clip(inputs, case["audio"])
        level = level_weights(torch.tensor([float(case["level"])]))
        person = one_hot_weights(torch.tensor([case["person"]]), 24)
        with torch.no_grad():
            pred, _ = net(audio, lengths, level, person)
        expected = outputs[case["output"]]
        assert pred.shape[1] == expected.shape[0]
        np.testing.assert_allclose(pred[0].numpy(), expected, atol=TOLERANCE, rtol=0)


def test_training_forward_matches_release(golden):
    net, cases, inputs, outputs = golden
    case = cases["forward_case"]
    a, la = _clip(inputs, case["input12"])
    b, lb = _clip(inputs, case["input21"])
    with torch.no_grad():
        result = net.training_forward(
            a, la, b, lb, torch.tensor([case["target11_frames"]]),
            torch.tensor([case["target12_frames"]]), level_weights(torch.tensor([1.0])),
            one_hot_weights(torch.tensor([case["person"]]), 24),
        )  # fmt: skip
    assert result.phone_logits is None  # the released network has no phone head
    released = (result.cross, result.self_, result.emotion_logits)
    for name, value in zip(case["outputs"], released, strict=True):
        np.testing.assert_allclose(value[0].numpy(), outputs[name], atol=TOLERANCE, rtol=0)
