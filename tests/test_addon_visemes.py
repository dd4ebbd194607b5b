"""Viseme rigs without Blender: which shape-key names are visemes (per rig family), and the
weights `visemes.extend` computes from the 52 ARKit channels."""

from __future__ import annotations

import numpy as np
import pytest

from blender_addon import mapping, visemes
from emotalk_core.arkit import CHANNELS, INDEX
from emotalk_core.phonetics.phonemes import TimedPhone
from training.synth import teacher
from training.synth.features import RATE, Prosody
from training.synth.styles import Style

OCULUS_KEYS = [f"vrc.v_{v.lower()}" for v in visemes.OCULUS]  # VRChat's spelling
BLINKS = ["Blink_L", "Blink_R"]


def named(result: mapping.ChannelMapping) -> dict[str, str]:
    return {key: mapping.ALL_CHANNELS[i] for key, i in result.by_key.items()}


def viseme(name: str) -> str:
    return f"viseme_{name}"


# -- names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spell", [
    lambda v: f"vrc.v_{v.lower()}",  # VRChat
    lambda v: f"v_{v}",
    lambda v: f"viseme_{v}",  # Ready Player Me, Oculus
    lambda v: v.upper(),  # PP, AA, ...
    lambda v: v,
], ids=["vrchat", "v_", "viseme_", "upper", "bare"])
def test_the_oculus_fifteen_in_any_spelling(spell):
    keys = [spell(v) for v in visemes.OCULUS]
    result = mapping.build_mapping([*keys, *BLINKS])
    assert named(result) == {**{spell(v): viseme(v) for v in visemes.OCULUS},
                             "Blink_L": "eyeBlinkLeft", "Blink_R": "eyeBlinkRight"}
    assert result.viseme_count == 15 and result.matched_count == 2
    assert len(result.unmatched) == 50  # the ARKit channels only


def test_ready_player_me_spells_ih_oh_ou_as_i_o_u():
    keys = ["viseme_sil", "viseme_PP", "viseme_aa", "viseme_I", "viseme_O", "viseme_U"]
    assert named(mapping.build_mapping(keys)) == {
        "viseme_sil": viseme("sil"), "viseme_PP": viseme("PP"), "viseme_aa": viseme("aa"),
        "viseme_I": viseme("ih"), "viseme_O": viseme("oh"), "viseme_U": viseme("ou")}


@pytest.mark.parametrize(("keys", "vowels"), [
    (["aa", "ih", "ou", "ee", "oh"], "VRM 1.0"),
    (["A", "I", "U", "E", "O"], "VRM 0.x"),
    (["Fcl_MTH_A", "Fcl_MTH_I", "Fcl_MTH_U", "Fcl_MTH_E", "Fcl_MTH_O"], "VRoid"),
    (["あ", "い", "う", "え", "お"], "MMD"),
])
def test_five_vowel_sets(keys, vowels):
    extra = ["Fcl_EYE_Close_L", "Fcl_EYE_Close_R", "Fcl_MTH_Close", "Fcl_MTH_Joy", "Blink"]
    result = mapping.build_mapping([*keys, *extra])
    assert named(result) == {
        keys[0]: viseme("aa"), keys[1]: viseme("ih"), keys[2]: viseme("ou"),
        keys[3]: viseme("E"), keys[4]: viseme("oh"),
        "Fcl_EYE_Close_L": "eyeBlinkLeft", "Fcl_EYE_Close_R": "eyeBlinkRight"}, vowels
    assert result.viseme_count == 5


def test_preston_blair_set():
    keys = ["AI", "E", "O", "U", "etc", "L", "WQ", "MBP", "FV", "rest"]
    assert named(mapping.build_mapping(keys)) == {
        "AI": viseme("aa"), "E": viseme("E_ih"), "O": viseme("oh"), "U": viseme("ou"),
        "etc": viseme("etc"), "L": viseme("nn"), "MBP": viseme("PP"), "FV": viseme("FF"),
        "rest": viseme("sil")}  # WQ: U is the ou of the set
    without_u = mapping.build_mapping([k for k in keys if k != "U"])
    assert named(without_u)["WQ"] == viseme("ou")


def test_a_rig_with_an_arkit_mouth_speaks_with_it():
    """Ready Player Me and VRoid perfect-sync rigs carry both sets: the visemes stay still."""
    result = mapping.build_mapping([*CHANNELS, *OCULUS_KEYS])
    assert result.matched_count == 52 and result.viseme_count == 0
    assert set(result.by_key) == set(CHANNELS)
    result = mapping.build_mapping(["Jaw_Open", "Eye_Blink_L", *OCULUS_KEYS])
    assert named(result) == {"Jaw_Open": "jawOpen", "Eye_Blink_L": "eyeBlinkLeft"}


def test_a_few_vowel_names_are_no_viseme_set():
    assert not mapping.build_mapping(["A", "E", "Smile"])
    assert named(mapping.build_mapping(["A", "E", "O", "Smile"])) == {
        "A": viseme("aa"), "E": viseme("E"), "O": viseme("oh")}


def test_overrides_name_viseme_channels_and_keys_with_overrides_count_in_the_set():
    keys = ["Mouth A", "aa", "ih", "ou", "ee", "oh"]
    result = mapping.build_mapping(keys, {"Mouth A": "viseme_aa", "ih": None, "ou": None})
    assert named(result) == {"Mouth A": viseme("aa"), "ee": viseme("E"), "oh": viseme("oh")}
    result = mapping.build_mapping(["Key 1", "Key 2"], {"Key 2": "viseme_PP"})
    assert named(result) == {"Key 2": viseme("PP")} and result.viseme_count == 1


# -- weights ------------------------------------------------------------------------------------
def frame(**channels: float) -> np.ndarray:
    """One frame of ARKit coefficients; `mouthPress=0.3` sets both sides."""
    row = np.zeros((1, 52), np.float32)
    for name, value in channels.items():
        for channel in (name, f"{name}Left", f"{name}Right"):
            if channel in INDEX:
                row[0, INDEX[channel]] = value
    return row


def lead(values: np.ndarray) -> tuple[str, float]:
    """The leading viseme of one frame and its weight."""
    weights = visemes.weights(values)[0]
    return visemes.OCULUS[int(np.argmax(weights))], float(weights.max())


@pytest.mark.parametrize(("pose", "want"), [
    ({}, "sil"),
    ({"jawOpen": 0.6}, "aa"),
    ({"jawOpen": 1.0}, "aa"),
    ({"jawOpen": 0.1, "mouthClose": 0.3, "mouthPress": 0.3}, "PP"),
    ({"jawOpen": 0.3, "mouthClose": 0.3}, "PP"),  # the jaw down, the lips held together
    ({"mouthPucker": 0.8}, "ou"),
    ({"jawOpen": 0.4, "mouthFunnel": 0.4, "mouthPucker": 0.2}, "oh"),
    ({"mouthRollLower": 0.5, "mouthUpperUp": 0.2}, "FF"),
    ({"jawOpen": 0.15, "tongueOut": 0.4}, "TH"),
    ({"jawOpen": 0.15, "mouthStretch": 0.35}, "ih"),
], ids=["rest", "jaw", "jaw_full", "shut", "sealed_jaw", "pucker", "funnel", "roll_lower",
        "tongue", "stretch"])
def test_leading_viseme_of_simple_poses(pose, want):
    name, weight = lead(frame(**pose))
    assert name == want
    assert weight > 0.5


def test_weights_are_a_partition_of_the_frame():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.random((500, 52)), 3 * rng.standard_normal((200, 52)),
                             np.zeros((1, 52)), np.ones((1, 52))]).astype(np.float32)
    weights = visemes.weights(values)
    assert weights.shape == (702, 15)
    assert np.all(weights >= 0) and np.all(weights <= 1)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    assert np.isfinite(weights).all()


def test_weights_grow_with_the_pose_then_saturate():
    scales = (0.1, 0.2, 0.4, 0.6, 0.75, 1.0, 1.5)
    opened = np.concatenate([frame(jawOpen=0.55 * s, mouthLowerDown=0.3 * s, mouthUpperUp=0.1 * s)
                             for s in scales])
    weights = visemes.weights(opened)
    aa, sil = weights[:, visemes.OCULUS.index("aa")], weights[:, 0]
    assert np.all(np.diff(aa) > 0) and np.all(np.diff(sil) <= 0)
    assert sil[0] > 0.5 and aa[-1] > 0.95  # a tenth of an "aa" is mostly rest


def test_smiling_silence_is_silence():
    name, weight = lead(frame(mouthSmile=0.5, eyeSquint=0.3, cheekSquint=0.3))
    assert (name, weight) == ("sil", pytest.approx(1.0))


def flat_prosody(seconds: float) -> Prosody:
    n = int(np.ceil(seconds * RATE)) + 1
    return Prosody(level=np.zeros(n), voiced=np.zeros(n, bool), pitch=np.zeros(n))


@pytest.mark.parametrize(("phone", "want"), [
    ("AA", "aa"), ("AO", "oh"), ("EH", "E"), ("IY", "ih"), ("UW", "ou"), ("W", "ou"),
    ("P", "PP"), ("B", "PP"), ("M", "PP"), ("F", "FF"), ("V", "FF"), ("TH", "TH"), ("K", "kk"),
    ("S", "SS"), ("SH", "CH"), ("JH", "CH"), ("R", "RR"),
])
def test_the_teachers_phones_give_their_visemes(phone, want):
    """The curves EmoTalk learns for a phone (its training teacher's, between silences) lead
    with that phone's viseme in the middle of the phone, and silence around it is sil."""
    phones = [TimedPhone("SIL", 0.0, 0.4), TimedPhone(phone, 0.4, 0.55, stress=1),
              TimedPhone("SIL", 0.55, 1.2)]
    curves = teacher.curves(phones, 36, flat_prosody(1.2), Style())
    middle = round(0.475 * 30 - 0.5)
    assert lead(curves[middle : middle + 1])[0] == want
    assert lead(curves[2:3]) == ("sil", pytest.approx(1.0, abs=0.1))


def test_extend_keeps_the_52_and_adds_every_viseme_channel():
    rng = np.random.default_rng(0)
    values = rng.random((40, 52)).astype(np.float32)
    out = visemes.extend(values)
    assert out.shape == (40, 52 + len(visemes.CHANNELS)) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :52], values)
    column = {name: out[:, i] for name, i in visemes.INDEX.items()}
    np.testing.assert_allclose(out[:, 52:67], visemes.weights(values), atol=1e-6)
    np.testing.assert_allclose(column["viseme_E_ih"], column["viseme_E"] + column["viseme_ih"],
                               atol=1e-6)
    consonants = sum(column[f"viseme_{v}"] for v in ("DD", "kk", "SS", "TH", "CH", "RR"))
    np.testing.assert_allclose(column["viseme_etc"], consonants, atol=1e-6)
    assert visemes.extend(np.zeros((0, 52), np.float32)).shape == (0, 69)


def test_channel_names_follow_the_52():
    assert mapping.ALL_CHANNELS[:52] == CHANNELS
    assert mapping.ALL_CHANNELS[52:] == visemes.CHANNELS
    assert [mapping.ALL_INDEX[n] for n in visemes.CHANNELS] == list(range(52, 69))
    assert visemes.describe("viseme_PP") == "Viseme PP (p, b, m), from the ARKit mouth"
