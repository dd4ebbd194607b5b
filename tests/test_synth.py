"""Synthetic corpus: phone table, TTS timings, the procedural teacher and the corpus builder.

The teacher tests need nothing but numpy (phones are built by hand); the TTS and corpus tests
need espeak-ng from the `espeakng-loader` wheel (the `train` extra, installed by `make setup`)
and are skipped with a reason without it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.arkit import INDEX, NUM_CHANNELS
from emotalk_core.manifest import entries_by_split, read_manifest
from emotalk_core.phonetics.phonemes import BILABIALS, OPEN_VOWELS, SIL, TimedPhone, to_arpabet
from training.synth import teacher
from training.synth.features import RATE, Prosody, analyse
from training.synth.sentences import sentences, vocabulary
from training.synth.styles import EMOTIONS, PERSONS, Style

needs_espeak = pytest.mark.skipif(
    not __import__("emotalk_core.phonetics.espeak", fromlist=["available"]).available(),
    reason="espeak-ng not installed (pip install espeakng-loader; `make setup` installs it)",
)


# ---------------------------------------------------------------------------------------------
# Helpers


def flat_prosody(seconds: float) -> Prosody:
    n = int(math.ceil(seconds * RATE)) + 1
    return Prosody(level=np.zeros(n), voiced=np.zeros(n, bool), pitch=np.zeros(n))


def make_phones(spec: list[tuple[str, float]]) -> list[TimedPhone]:
    """Contiguous phones from (phone, duration) pairs."""
    out, t = [], 0.0
    for phone, duration in spec:
        out.append(TimedPhone(phone, t, t + duration, stress=2 if phone in OPEN_VOWELS else 0))
        t += duration
    return out


def frame_labels(phones: list[TimedPhone], frames: int, fps: float = 30) -> list[str | None]:
    """The metric's rule (DESIGN.md section 8): a phone owns the frames whose centres it covers."""
    labels: list[str | None] = [None] * frames
    for p in phones:
        first = max(0, math.ceil(p.start * fps - 0.5))
        for k in range(first, min(frames, math.ceil(p.end * fps - 0.5))):
            labels[k] = p.phone
    return labels


def aperture(c: np.ndarray) -> np.ndarray:
    lower = 0.5 * (c[:, INDEX["mouthLowerDownLeft"]] + c[:, INDEX["mouthLowerDownRight"]])
    upper = 0.5 * (c[:, INDEX["mouthUpperUpLeft"]] + c[:, INDEX["mouthUpperUpRight"]])
    return c[:, INDEX["jawOpen"]] - c[:, INDEX["mouthClose"]] + 0.5 * lower + 0.25 * upper


def closure_auc(pairs: list[tuple[np.ndarray, list[str | None]]]) -> float:
    opened, closed = [], []
    for curves, labels in pairs:
        a = aperture(curves)
        opened += [a[k] for k, lab in enumerate(labels) if lab in OPEN_VOWELS]
        closed += [a[k] for k, lab in enumerate(labels) if lab in BILABIALS]
    o, c = np.array(opened)[:, None], np.array(closed)[None, :]
    return float((o > c).mean() + 0.5 * (o == c).mean())


SPEECH = [(SIL, 0.3), ("B", 0.08), ("AA", 0.16), ("B", 0.07), ("M", 0.08), ("AE", 0.14),
          ("P", 0.09), ("AO", 0.15), ("M", 0.09), ("AY", 0.18), ("W", 0.07), ("UW", 0.15),
          ("P", 0.08), ("AH", 0.12), ("F", 0.09), ("AW", 0.17), ("B", 0.08), ("IY", 0.12),
          (SIL, 0.4)]  # fmt: skip


def render(emotion: str = "neutral", intensity: int = 1, style: Style | None = None,
           seed: int = 0) -> tuple[np.ndarray, list[TimedPhone]]:  # fmt: skip
    phones = make_phones(SPEECH)
    seconds = phones[-1].end
    frames = math.ceil(seconds * 30)
    curves = teacher.curves(phones, frames, flat_prosody(seconds), style or Style(), emotion,
                            intensity, seed=seed)  # fmt: skip
    return curves, phones


# ---------------------------------------------------------------------------------------------
# Phones and sentences


def test_phone_table_maps_to_arpabet():
    assert to_arpabet("p") == ("P",)
    assert to_arpabet("A@") == ("AA", "R")
    assert to_arpabet("_:") == (SIL,)
    assert to_arpabet("t#") == ("T",)  # variant folded onto its stem
    assert to_arpabet(";") == ()  # modifier without time of its own


def test_sentences_are_deterministic_distinct_and_prefix_stable():
    a, b = sentences(5, 40), sentences(5, 60)
    assert a == b[:40]  # growing a corpus keeps its sentences
    assert len(set(b)) == 60
    assert sentences(6, 40) != a


def test_vocabulary_is_in_the_cmu_dictionary():
    pocketsphinx = pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed")
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    words = {line.split(maxsplit=1)[0] for line in path.read_text().splitlines() if line}
    assert sorted(vocabulary() - words) == []


# ---------------------------------------------------------------------------------------------
# Teacher (no TTS needed)


def test_teacher_shape_range_and_determinism():
    curves, _ = render(seed=3)
    assert curves.dtype == np.float32 and curves.shape[1] == NUM_CHANNELS
    assert curves.min() >= 0.0 and curves.max() <= 1.0
    np.testing.assert_array_equal(curves, render(seed=3)[0])
    assert not np.array_equal(curves, render(seed=4)[0])  # blinks and gaze follow the seed


def interior(phones: list[TimedPhone], frames: int, margin: float = 0.012) -> np.ndarray:
    """Frames whose centre is at least `margin` from every phone boundary: the lips move
    across boundaries (20 ms ramps), so edge frames are in between by design."""
    centres = (np.arange(frames) + 0.5) / 30
    edges = np.array([p.start for p in phones] + [phones[-1].end])
    return np.min(np.abs(centres[:, None] - edges[None, :]), axis=1) >= margin


def test_teacher_closes_lips_on_bilabials_and_opens_on_open_vowels():
    curves, phones = render("neutral", 0)
    labels = frame_labels(phones, curves.shape[0])
    inside = interior(phones, curves.shape[0])
    bilabial = np.array([lab in BILABIALS for lab in labels]) & inside
    vowel = np.array([lab in OPEN_VOWELS for lab in labels]) & inside
    jaw, close = curves[:, INDEX["jawOpen"]], curves[:, INDEX["mouthClose"]]
    press = curves[:, INDEX["mouthPressLeft"]]
    assert bilabial.sum() >= 8 and vowel.sum() >= 15
    # Sealed lips: mouthClose above jawOpen, jaw low, lips pressed, lips not parted.
    assert np.all(close[bilabial] > jaw[bilabial] + 0.1)
    assert np.all(jaw[bilabial] < 0.2)
    assert np.all(press[bilabial] > 0.15)
    assert np.all(curves[bilabial, INDEX["mouthLowerDownLeft"]] < 0.03)
    # Open vowels: jaw open, lower lip down, lips apart.
    assert np.median(jaw[vowel]) > 0.3
    assert np.median(curves[vowel, INDEX["mouthLowerDownLeft"]]) > 0.1
    assert np.all(close[vowel] < 0.1)
    assert aperture(curves)[bilabial].max() < 0 < aperture(curves)[vowel].min()
    assert closure_auc([(curves, labels)]) > 0.98  # edge frames included


def test_adjacent_bilabials_form_one_closure():
    phones = make_phones([(SIL, 0.3), ("AH", 0.15), ("M", 0.06), ("P", 0.07), ("T", 0.06),
                          ("AA", 0.15), (SIL, 0.3)])  # "bumped"-like: no release between M and P
    seconds = phones[-1].end
    curves = teacher.curves(phones, math.ceil(seconds * 30), flat_prosody(seconds), Style())
    boundary = phones[3].start  # M -> P
    k = int(boundary * 30)  # the frame around the M/P boundary
    assert curves[k, INDEX["mouthClose"]] > curves[k, INDEX["jawOpen"]] + 0.1
    assert aperture(curves)[k] < 0


def test_teacher_rounds_lips_on_rounded_phones():
    curves, phones = render("neutral", 0)
    labels = frame_labels(phones, curves.shape[0])
    rounded = [k for k, lab in enumerate(labels) if lab in ("UW", "W")]
    spread = [k for k, lab in enumerate(labels) if lab == "IY"]
    pucker = curves[:, INDEX["mouthPucker"]]
    assert pucker[rounded].mean() > 0.35 > pucker[spread].mean()


@pytest.mark.parametrize(
    ("emotion", "channels"),
    [
        ("happy", ["mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "eyeSquintLeft"]),
        ("sad", ["browInnerUp", "mouthFrownLeft", "mouthFrownRight"]),
        ("angry", ["browDownLeft", "browDownRight", "noseSneerLeft"]),
        ("surprised", ["eyeWideLeft", "eyeWideRight", "browOuterUpLeft", "browInnerUp"]),
        ("fearful", ["browInnerUp", "eyeWideLeft", "mouthStretchLeft"]),
        ("disgusted", ["noseSneerLeft", "noseSneerRight", "mouthUpperUpLeft"]),
        ("calm", ["mouthSmileLeft"]),
    ],
)
def test_emotions_move_the_expected_channels(emotion, channels):
    neutral = render("neutral", 0)[0].mean(axis=0)
    normal = render(emotion, 0)[0].mean(axis=0)
    strong = render(emotion, 1)[0].mean(axis=0)
    for name in channels:
        i = INDEX[name]
        assert strong[i] > normal[i] > neutral[i] + 0.02, name


def test_emotions_leave_lip_closure_intact():
    for emotion in EMOTIONS:
        curves, phones = render(emotion, 1)
        labels = frame_labels(phones, curves.shape[0])
        assert closure_auc([(curves, labels)]) > 0.98, emotion


def test_person_styles_differ():
    jaw = [render(style=PERSONS[i].style)[0][:, INDEX["jawOpen"]].mean() for i in range(24)]
    assert max(jaw) > 1.3 * min(jaw)
    assert len({p.voice for p in PERSONS}) == 24


def test_blinks_happen_and_open_again():
    phones = make_phones([(SIL, 0.5)] + SPEECH[1:-1] * 6 + [(SIL, 0.5)])
    seconds = phones[-1].end
    curves = teacher.curves(phones, math.ceil(seconds * 30), flat_prosody(seconds),
                            PERSONS[0].style, "neutral", 0, seed=1)  # fmt: skip
    blink = curves[:, INDEX["eyeBlinkLeft"]]
    assert blink.max() > 0.6 and np.median(blink) < 0.1


def test_pitch_accents_raise_brows():
    phones = make_phones(SPEECH)
    seconds = phones[-1].end
    flat = flat_prosody(seconds)
    pitch = np.zeros_like(flat.pitch)
    pitch[80:110] = 5.0  # a 5-semitone accent
    voiced = np.ones_like(flat.voiced)
    accented = Prosody(level=flat.level, voiced=voiced, pitch=pitch)
    frames = math.ceil(seconds * 30)
    base = teacher.curves(phones, frames, flat, Style(), "neutral", 0, seed=0)
    lifted = teacher.curves(phones, frames, accented, Style(), "neutral", 0, seed=0)
    k = int(0.95 * 30)
    assert lifted[k, INDEX["browInnerUp"]] > base[k, INDEX["browInnerUp"]] + 0.05


# ---------------------------------------------------------------------------------------------
# TTS


@needs_espeak
def test_espeak_mnemonics_all_map():
    from emotalk_core.phonetics.espeak import Espeak, VoiceSettings

    text = " ".join(sorted(vocabulary()))
    engine = Espeak.get()
    for voice in ("en-us", "en", "en-gb-scotland"):
        _, events = engine.synthesize_raw(text, VoiceSettings(voice=voice))
        from emotalk_core.phonetics.phonemes import parse_mnemonic

        unmapped = {n for n, _ in events if not to_arpabet(parse_mnemonic(n)[0])} - {";"}
        assert unmapped == set(), voice


@needs_espeak
@pytest.mark.parametrize("person", [0, 5, 16])
def test_tts_phone_timings_are_monotonic_and_cover_the_audio(person):
    from emotalk_core.phonetics.espeak import synthesize
    from training.synth.styles import voice_settings

    text = sentences(1, 3)[person % 3]
    utterance = synthesize(text, voice_settings(PERSONS[person], "happy", 1), 0.2, 0.3)
    phones = utterance.phones
    assert phones[0].start == 0.0 and phones[0].phone == SIL and phones[-1].phone == SIL
    assert phones[-1].end == pytest.approx(utterance.seconds)
    for a, b in zip(phones, phones[1:], strict=False):
        assert a.end == pytest.approx(b.start) and b.end > b.start
    speech = [p for p in phones if p.phone != SIL]
    assert len(speech) > 10
    assert speech[0].start >= 0.15 and speech[-1].end <= utterance.seconds - 0.25
    # The words are really there: the level is high inside speech and low in the padding.
    level = analyse(utterance.audio).level
    assert level[int(0.1 * RATE)] < -25 and np.median(level[int(speech[0].start * RATE):
                                                         int(speech[-1].end * RATE)]) > -10


@needs_espeak
def test_teacher_auc_on_synthesised_speech():
    from emotalk_core.audio import num_frames
    from emotalk_core.phonetics.espeak import synthesize
    from training.synth.styles import voice_settings

    pairs = []
    for i, text in enumerate(sentences(11, 8)):
        person = PERSONS[(3 * i) % 24]
        emotion = EMOTIONS[i % len(EMOTIONS)]
        u = synthesize(text, voice_settings(person, emotion, i % 2))
        frames = num_frames(u.audio.size)
        curves = teacher.curves(u.phones, frames, analyse(u.audio), person.style, emotion, i % 2)
        pairs.append((curves, frame_labels(u.phones, frames)))
    assert closure_auc(pairs) > 0.97


# ---------------------------------------------------------------------------------------------
# Corpus


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from training.synth.corpus import build

    one = tmp_path_factory.mktemp("synth_j1")
    two = tmp_path_factory.mktemp("synth_j2")
    build(one, minutes=0.6, seed=7, jobs=1, progress=False)
    build(two, minutes=0.6, seed=7, jobs=2, progress=False)
    return one, two


@needs_espeak
def test_corpus_is_byte_identical_whatever_the_jobs(corpora):
    one, two = corpora
    assert _digest(one) == _digest(two)


@needs_espeak
def test_corpus_manifest_files_and_frame_counts(corpora):
    root = corpora[0]
    entries = read_manifest(root / "manifest.jsonl")
    assert sum(sf.info(e.audio).duration for e in entries) >= 0.6 * 60
    for e in entries:
        info = sf.info(e.audio)
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        curves = np.load(e.blendshapes)
        assert curves.dtype == np.float32
        assert curves.shape == (math.ceil(info.frames / 16000 * 30), NUM_CHANNELS)
        assert e.emotion in EMOTIONS and e.intensity in (0, 1) and 0 <= e.person < 24
        assert e.emotion != "neutral" or e.intensity == 0
        phones = json.loads((root / "phones" / f"{e.clip_id}.json").read_text())
        assert phones[-1][2] == pytest.approx(info.duration, abs=1e-3)
        assert (root / "transcripts" / f"{e.clip_id}.txt").read_text().strip()


@needs_espeak
def test_corpus_pairs_and_splits_by_sentence(corpora):
    entries = read_manifest(corpora[0] / "manifest.jsonl")
    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(e.content_id, []).append(e)
    assert len(groups) >= 3
    for members in groups.values():
        assert len(members) >= 2
        assert len({m.person for m in members}) == 1  # same person
        assert len({m.split for m in members}) == 1  # a sentence lives in one split
        assert len({m.emotion for m in members}) == len(members)  # different emotions
    splits = entries_by_split(entries)
    assert all(splits[s] for s in ("train", "val", "test"))
    texts = {s: {(corpora[0] / "transcripts" / f"{e.clip_id}.txt").read_text()
                 for e in splits[s]} for s in splits}  # fmt: skip
    assert not texts["train"] & (texts["val"] | texts["test"])


@needs_espeak
def test_corpus_rerun_is_idempotent_and_settings_are_checked(corpora, tmp_path):
    import shutil

    from training.synth.corpus import build

    copy = tmp_path / "copy"
    shutil.copytree(corpora[0], copy)
    before = _digest(copy)
    mtimes = {p: p.stat().st_mtime_ns for p in copy.rglob("*.wav")}
    build(copy, minutes=0.6, seed=7, jobs=2, progress=False)
    assert _digest(copy) == before
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*.wav")} == mtimes  # nothing redone
    with pytest.raises(SystemExit, match="made with"):
        build(copy, minutes=0.6, seed=8, progress=False)


@needs_espeak
def test_corpus_resumes_after_an_interruption(corpora, tmp_path):
    import shutil

    from training.synth.corpus import build

    copy = tmp_path / "copy"
    shutil.copytree(corpora[0], copy)
    victim = sorted((copy / "groups").iterdir())[-1]
    clip = json.loads(victim.read_text())["clips"][0]["clip_id"]
    victim.unlink()  # as if killed before the group finished
    (copy / "blendshape" / f"{clip}.npy").write_bytes(b"partial")
    build(copy, minutes=0.6, seed=7, jobs=1, progress=False)
    assert _digest(copy) == _digest(corpora[0])
