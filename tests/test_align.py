"""Forced alignment (pocketsphinx) and the real-speech labeller.

Alignment tests need pocketsphinx (and espeak-ng to make speech to align); both come with the
`train` extra that `make setup` installs, and the tests are skipped with a reason without them.
"""

from __future__ import annotations

import difflib
import json
import math

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.phonetics import align
from emotalk_core.phonetics.espeak import available as espeak_available
from emotalk_core.phonetics.phonemes import SIL
from emotalk_core.phonetics.track import frame_phones

needs_aligner = pytest.mark.skipif(
    not (align.available() and espeak_available()),
    reason="pocketsphinx and espeak-ng needed (pip install pocketsphinx espeakng-loader; "
    "`make setup` installs both)",
)


# ---------------------------------------------------------------------------------------------
# Pure functions


def test_frame_phones_gives_each_frame_the_phone_covering_its_centre():
    phones = [(SIL, 0.0, 0.05), ("B", 0.05, 0.1), ("AA", 0.1, 0.2)]
    # frame centres at 30 fps: 0.0167, 0.05, 0.0833, 0.1167, 0.15, 0.1833, 0.2167
    labels = frame_phones(phones, 7)
    assert labels == [SIL, "B", "B", "AA", "AA", "AA", None]
    assert frame_phones([], 2) == [None, None]


def test_normalise_transcript():
    words = align.normalise_transcript("Press 1, or 42 -- then #... Don't stop! 2,500?")
    assert words == ["press", "one", "or", "forty", "two", "then", "don't", "stop", "two",
                     "thousand", "five", "hundred"]  # fmt: skip
    assert align.number_words(1905) == ["one", "thousand", "nine", "hundred", "five"]


def test_alignment_refuses_empty_input():
    with pytest.raises(align.AlignmentError, match="no words"):
        align.align_phones(np.zeros(16000, np.float32), "... !")
    with pytest.raises(align.AlignmentError, match="shorter"):
        align.align_phones(np.zeros(800, np.float32), "hello")
    with pytest.raises(align.AlignmentError, match="mono"):
        align.align_phones(np.zeros((100, 2), np.float32), "hello")


# ---------------------------------------------------------------------------------------------
# Alignment of synthetic speech


def _boundary_errors(text: str, person: int) -> tuple[np.ndarray, float]:
    """|aligned start - espeak start| of matched phones, and the share of espeak's phones
    matched in order."""
    from emotalk_core.phonetics.espeak import synthesize
    from training.synth.styles import PERSONS, voice_settings

    utterance = synthesize(text, voice_settings(PERSONS[person], "neutral", 0))
    aligned = align.align_phones(utterance.audio, text)
    assert aligned[0][1] == 0.0
    assert aligned[-1][2] == pytest.approx(utterance.seconds, abs=0.011)
    for (_, _, end), (_, start, _) in zip(aligned, aligned[1:], strict=False):
        assert start == pytest.approx(end)
    ref = [p for p in utterance.phones if p.phone != SIL]
    got = [p for p in aligned if p[0] != SIL]
    matcher = difflib.SequenceMatcher(a=[p.phone for p in ref], b=[p[0] for p in got],
                                      autojunk=False)  # fmt: skip
    errors = [abs(ref[block.a + j].start - got[block.b + j][1])
              for block in matcher.get_matching_blocks() for j in range(block.size)]  # fmt: skip
    return np.array(errors), len(errors) / len(ref)


@needs_aligner
def test_alignment_recovers_espeak_phone_timings():
    texts = ["Bob made a map of the big blue pool.",
             "Please bring the warm soup to the village market today.",
             "The young farmer moved three heavy boxes into the garage."]  # fmt: skip
    errors, shares = [], []
    for text, person in zip(texts, (1, 3, 11), strict=True):
        e, share = _boundary_errors(text, person)
        errors.append(e)
        shares.append(share)
    errors = np.concatenate(errors)
    assert min(shares) > 0.85
    assert np.median(errors) < 0.025 and errors.mean() < 0.035  # measured ~12 / ~18 ms


@needs_aligner
def test_alignment_pronounces_unknown_words_with_espeak():
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize

    text = "The zorblaxian moon is bright."
    utterance = synthesize(text, VoiceSettings("en-us+f2"))
    phones = [p for p, _, _ in align.align_phones(utterance.audio, text)]
    assert "Z" in phones and "M" in phones


needs_espeak = pytest.mark.skipif(not espeak_available(),
                                  reason="espeak-ng needed (pip install espeakng-loader)")


@needs_espeak
def test_foreign_words_get_their_language_pronunciation_in_english_phones():
    from emotalk_core.phonetics.phonemes import ARPABET

    tokens, pronunciations = align.foreign_words("Maman a mis un bol, d'accord?", "fr")
    assert len(tokens) == 6 and all(t.isascii() and t.isalnum() for t in tokens)
    assert tokens == align.foreign_words("maman A MIS un bol d'accord", "fr")[0]  # stable
    assert set(tokens).isdisjoint(align.foreign_words("maman a mis un bol d'accord", "it")[0])
    maman, _, _, un, bol, _ = (pronunciations[t] for t in tokens)
    assert maman[0] == "M" and maman.count("M") == 2 and bol[0] == "B"
    assert un  # a nasal vowel English lacks, mapped onto its nearest English vowel
    assert all(p in ARPABET and p != SIL for phones in pronunciations.values() for p in phones)
    _, russian = align.foreign_words("мы", "ru")  # ы: a close vowel, not French u
    assert list(russian.values()) == [["M", "IH"]]
    with pytest.raises(align.AlignmentError, match="cannot pronounce"):
        align.foreign_words("ok ...", "no-such-voice")


@needs_aligner
def test_alignment_in_another_language_places_the_lip_closures():
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize

    text = "Maman a mis la pomme dans le bol, puis Bruno a pris le panier."
    utterance = synthesize(text, VoiceSettings("fr"))
    aligned = align.align_phones(utterance.audio, text, language="fr")
    ref = [p.start for p in utterance.phones if p.phone in ("P", "B", "M")]
    got = [start for phone, start, _ in aligned if phone in ("P", "B", "M")]
    assert len(got) == len(ref) == 10
    # espeak reports stops at their burst and the aligner at the closure: tens of ms apart
    assert np.median(np.abs(np.array(got) - np.array(ref))) < 0.06
    assert aligned[-1][2] == pytest.approx(utterance.seconds, abs=0.011)


@needs_aligner
def test_alignment_failure_is_a_clear_error():
    silence = np.zeros(int(0.3 * 16000), np.float32)
    with pytest.raises(align.AlignmentError, match="forced alignment failed"):
        align.align_phones(silence, "the quick brown fox jumps over the lazy dog once again")


@needs_aligner
def test_alignment_reads_files(tmp_path):
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize

    utterance = synthesize("Good morning.", VoiceSettings("en-us+f4"))
    path = tmp_path / "clip.wav"
    sf.write(path, utterance.audio, 16000)
    phones = [p for p, _, _ in align.align_phones(path, "Good morning.")]
    assert [p for p in phones if p != SIL] == ["G", "UH", "D", "M", "AO", "R", "N", "IH", "NG"]


# ---------------------------------------------------------------------------------------------
# Real-speech labeller (no downloads: parsers and the labelling step on local audio)


def test_asterisk_transcript_parser():
    from training.real_speech import parse_asterisk_transcripts

    text = ("; Core Asterisk Sounds in English\n\nbeep: [this is a simple beep tone]\n"
            "agent-pass: Please enter your password followed by the pound key.\n"
            "dictate/forhelp: press 0 for help\nvm-star: press * or #\n"
            "silence/1: 1 second of silence\nvm-intro: After the tone. (simple tone plays)\n")
    parsed = parse_asterisk_transcripts(text)
    assert set(parsed) == {"agent-pass", "dictate/forhelp", "vm-star", "vm-intro"}
    assert "tone" in parsed["vm-intro"] and "plays" not in parsed["vm-intro"]
    assert "star" in parsed["vm-star"] and "pound" in parsed["vm-star"]


def test_asterisk_transcripts_in_other_languages_drop_keypad_names():
    from training.real_speech import parse_asterisk_transcripts

    text = ("\ufeff; Core Asterisk Sounds in French\nactivated: activé\n"
            "vm-star: appuyez sur * ou #\nbeep: [bip]\n")
    assert parse_asterisk_transcripts(text, english=False) == {"activated": "activé"}


def test_asterisk_intl_clips_carry_their_language(tmp_path):
    import gzip

    from training import real_speech as R

    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    for language, folder, _, _ in R.ASTERISK_INTL_VOICES:  # as if downloaded and unpacked
        root = cache / "asterisk_intl" / language
        for package in (f"asterisk-core-sounds-{language}-wav", f"asterisk-core-sounds-{language}"):
            (cache / "debs" / f"{package}_1.6.1-1_all.deb").write_bytes(b"")
        for part in ("wav", "text"):
            (root / part).mkdir(parents=True)
            (root / part / ".done").touch()
        voice = root / "wav" / "usr/share/asterisk/sounds" / folder
        voice.mkdir(parents=True)
        sf.write(voice / "hello.wav", np.zeros(8000, np.float32), 8000)
        listing = root / "text" / f"usr/share/doc/core-sounds-{language}.txt.gz"
        listing.parent.mkdir(parents=True)
        listing.write_bytes(gzip.compress(
            f"hello: bonjour {language}\nmissing: no file\nvm-star: * ?\n".encode()))
    clips = R.fetch_asterisk_intl(cache)
    assert [(c.speaker, c.key, c.language) for c in clips] == [
        (speaker, "hello", voice) for _, _, speaker, voice in R.ASTERISK_INTL_VOICES]
    assert clips[0].transcript == "bonjour fr" and clips[0].clip_id == "asterisk_intl-june-hello"
    assert R.DEFAULT_SPLITS["asterisk_intl"] == "train"
    (cache / "asterisk_intl" / "it" / "text" / "usr/share/doc/core-sounds-it.txt.gz").unlink()
    with pytest.raises(R.SourceError, match="core-sounds-it.txt.gz is missing"):
        R.fetch_asterisk_intl(cache)


def test_mfa_reference_transcripts_parser():
    from training.real_speech import mfa_reference_transcripts

    source = ('import pytest\n@pytest.fixture(scope="session")\ndef reference_transcripts():\n'
              '    return {"mfa_a": "montreal forced aligner", "mfa_b": "m f a is like putty"}\n')
    assert mfa_reference_transcripts(source) == {
        "mfa_a": "montreal forced aligner", "mfa_b": "m f a is like putty"}  # fmt: skip


def test_person_ids_are_stable_and_in_range():
    from training.real_speech import person_of

    assert person_of("allison") == 1 and person_of("michael") == 0
    assert 0 <= person_of("someone") < 24 and person_of("someone") == person_of("someone")


@needs_aligner
def test_process_clip_labels_a_recording_and_skips_failures(tmp_path):
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize
    from training.real_speech import RawClip, _entry, process_clip

    text = "My mother baked a pumpkin pie."
    utterance = synthesize(text, VoiceSettings("en-us+f3"), 0.3, 0.3)
    wav8k = tmp_path / "in.wav"  # 8 kHz like the asterisk prompts
    from soxr import resample

    sf.write(wav8k, resample(utterance.audio, 16000, 8000), 8000)
    out = tmp_path / "out"
    clip = RawClip("asterisk", "allison", "x/pie", wav8k, text)
    good = process_clip((str(out), clip, "train", 0))
    assert good["status"] == "ok", good
    clip_id = good["clip_id"]
    info = sf.info(out / "audio" / f"{clip_id}.wav")
    assert info.samplerate == 16000
    curves = np.load(out / "blendshape" / f"{clip_id}.npy")
    assert curves.shape == (math.ceil(info.frames / 16000 * 30), 52)
    phones = json.loads((out / "phones" / f"{clip_id}.json").read_text())
    labels = frame_phones([tuple(p) for p in phones], curves.shape[0])
    jaw, close = curves[:, 24], curves[:, 26]
    bilabial = [k for k, p in enumerate(labels) if p in ("P", "B", "M")]
    vowel = [k for k, p in enumerate(labels) if p in ("AA", "AE", "AH", "AO", "AW", "AY")]
    assert np.mean(jaw[vowel] - close[vowel]) > np.mean(jaw[bilabial] - close[bilabial]) + 0.2
    entry = _entry(good)
    assert entry.emotion == "neutral" and entry.person == 1 and entry.split == "train"

    wrong = process_clip((str(out), RawClip("mfa", "michael", "short", wav8k,
                                            "this transcript is much too long for the audio "
                                            "and cannot be aligned at all ever"), "val", 0))
    assert wrong["status"] == "skipped" and "AlignmentError" in wrong["reason"]
    assert (out / "records" / f"{wrong['clip_id']}.json").exists()


FAKE_FLITE = """#!/bin/sh
# Stands in for flite: checks its library path, then copies a 16 kHz clip to -o.
test -f "$LD_LIBRARY_PATH/libflite.so.1" || { echo "no libflite" >&2; exit 3; }
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift;; -voice) echo "$2" >> "$(dirname "$0")/voices";; esac
  shift
done
cp "$(dirname "$0")/template.wav" "$out"
"""


def test_flite_clips_read_grammar_sentences_with_the_chosen_voices(tmp_path, monkeypatch):
    import stat

    from training import real_speech as R
    from training.synth.sentences import sentences

    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    for package in ("flite", "libflite1"):  # as if downloaded and unpacked before
        (cache / "debs" / f"{package}_2.2-5_amd64.deb").write_bytes(b"")
        (cache / "flite" / package).mkdir(parents=True)
        (cache / "flite" / package / ".done").touch()
    binary = cache / "flite" / "flite" / "usr" / "bin" / "flite"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_FLITE)
    sf.write(binary.parent / "template.wav", np.zeros(8000, np.float32), 16000)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    lib = cache / "flite" / "libflite1" / "usr" / "lib" / "libflite.so.1"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    monkeypatch.setattr(R, "FLITE_SENTENCES_PER_VOICE", 5)

    clips = R.fetch_flite(cache)
    count = R.FLITE_SENTENCES_PER_VOICE * len(R.FLITE_VOICES)
    assert len(clips) == count
    assert [c.transcript for c in clips] == sentences(R.FLITE_SENTENCE_SEED, count)
    assert {c.speaker for c in clips} == set(R.FLITE_VOICES)
    assert not {"awb", "slt"} & set(R.FLITE_VOICES)  # the held-out ARCTIC test speakers
    assert all(sf.info(c.path).samplerate == 16000 for c in clips[:3])
    assert not list((cache / "flite" / "wav").glob("*.partial.wav"))
    again = R.fetch_flite(cache)  # synthesised once: the second call reuses the files
    assert [c.path for c in again] == [c.path for c in clips]
    assert len((binary.parent / "voices").read_text().split()) == count
    assert R.DEFAULT_SPLITS["flite"] == "train"


@needs_aligner
def test_alignment_does_not_depend_on_what_was_aligned_before():
    from emotalk_core.phonetics.espeak import VoiceSettings, synthesize

    text = "Bob made a map of the big blue pool."
    utterance = synthesize(text, VoiceSettings("en-us+f2"))
    first = align.align_phones(utterance.audio, text)
    other = synthesize("Please bring the warm soup to the market.", VoiceSettings("en-us+m3"))
    align.align_phones(other.audio, "Please bring the warm soup to the market.")
    assert align.align_phones(utterance.audio, text) == first
