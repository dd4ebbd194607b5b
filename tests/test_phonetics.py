"""The phonetic stream at inference: phone-loop decoding (chunked over processes, cancellable),
forced alignment of a transcript with its fallback, the per-frame track, and what Predictor
does with it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emotalk_core.audio import load_audio, num_frames
from emotalk_core.config import PHONE_LABELS
from emotalk_core.errors import Cancelled
from emotalk_core.phonetics import loop, phone_track, recognize
from emotalk_core.phonetics.espeak import VoiceSettings, synthesize
from emotalk_core.phonetics.track import (
    ALIGNED_OFFSET,
    NO_PHONE,
    PhoneTrack,
    aligned_closures,
    source_classes,
    track_classes,
)

BILABIALS = ("P", "B", "M")
TEXT = "Bob made a map of the big blue pool."


@pytest.fixture(scope="module")
def utterance():
    return synthesize(TEXT, VoiceSettings("en-us+f2"))


def bilabial_centres(phones) -> np.ndarray:
    return np.array([(a + b) / 2 for p, a, b in phones if p in BILABIALS])


def tiles(phones, seconds: float) -> bool:
    joined = all(abs(a[2] - b[1]) < 1e-9 for a, b in zip(phones, phones[1:], strict=False))
    return phones[0][1] == 0.0 and abs(phones[-1][2] - seconds) < 1e-6 and joined


def test_aligned_track_puts_the_bilabials_within_50_ms(utterance):
    found = phone_track(utterance.audio, TEXT)
    assert found.source == "alignment" and not found.warnings
    ref = [p for p in utterance.phones if p.phone in BILABIALS]
    got = bilabial_centres(found.phones)
    assert len(got) == len(ref) == 8
    # espeak reports stops at their burst, the aligner at the closure: compare the onsets of
    # nasals and the ends of stops, where both agree on the lips
    errors = [min(abs(got - (r.start + r.end) / 2)) for r in ref]
    assert np.median(errors) < 0.05 and max(errors) < 0.1


def test_phone_loop_finds_bilabials_without_a_transcript(utterance):
    found = phone_track(utterance.audio)
    assert found.source == "loop" and tiles(found.phones, utterance.seconds)
    got = bilabial_centres(found.phones)
    ref = [(p.start + p.end) / 2 for p in utterance.phones if p.phone in BILABIALS]
    hits = sum(1 for r in ref if got.size and min(abs(got - r)) < 0.05)
    assert hits >= 2  # the loop is noisy; a broken time scale or decoder finds none


def test_phone_loop_gives_the_same_phones_whatever_it_decoded_before(utterance):
    first = loop.decode(utterance.audio)
    loop.decode(synthesize("Something else entirely.", VoiceSettings("en-us+m3")).audio)
    assert loop.decode(utterance.audio) == first


def test_long_audio_decodes_in_chunks_over_processes(utterance):
    # 70 s: several chunks, decoded in worker processes and stitched at chunk cores.
    pause = np.zeros(int(0.5 * 16000), np.float32)
    once = np.concatenate([utterance.audio, pause])
    audio = np.tile(once, int(np.ceil(70 * 16000 / once.size)))
    progress = []
    phones = loop.decode(audio, workers=2, progress=lambda d, t: progress.append((d, t)))
    assert tiles(phones, audio.size / 16000)
    assert progress[-1][0] == progress[-1][1] == len(loop.plan_chunks(audio.size)) > 1
    assert len(bilabial_centres(phones)) >= 10
    # worker processes give exactly what one process decoding the same chunks gives
    assert loop.decode(audio, workers=1) == phones
    for a, b in zip(phones, phones[1:], strict=False):
        assert not (a[0] == b[0] == "SIL")  # pauses merged across chunk edges


def test_chunk_plan_tiles_the_audio():
    plans = loop.plan_chunks(int(75.5 * 16000))
    cores = [(c, d) for _, _, c, d in plans]
    assert cores[0][0] == 0 and cores[-1][1] == int(75.5 * 16000)
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:], strict=False))
    assert all(s <= c and e >= d for s, e, c, d in plans)


def test_decoding_can_be_cancelled(utterance):
    with pytest.raises(Cancelled):
        loop.decode(utterance.audio, cancel=lambda: True)
    audio = np.tile(utterance.audio, 30)
    with pytest.raises(Cancelled):
        loop.decode(audio, workers=2, cancel=lambda: True)


def test_transcript_with_unknown_words_aligns(utterance):
    text = "Zorblax made a map of the big blue pool."  # "Zorblax" is not in the dictionary
    found = phone_track(utterance.audio, text)
    assert found.source == "alignment" and not found.warnings
    assert [p for p, _, _ in found.phones if p in BILABIALS][1:] == ["M", "M", "P", "B", "B",
                                                                   "P"]


def test_alignment_failure_falls_back_to_the_loop_with_a_warning():
    silence = np.random.default_rng(0).normal(0, 1e-4, int(0.3 * 16000)).astype(np.float32)
    found = phone_track(silence, "the quick brown fox jumps over the lazy dog once again")
    assert found.source == "loop"
    assert len(found.warnings) == 1 and "could not be aligned" in found.warnings[0]


def test_track_classes_follow_the_frame_rule_and_the_source():
    phones = [("SIL", 0.0, 0.05), ("M", 0.05, 0.1), ("AA1", 0.1, 0.2)]
    classes = track_classes(phones, 8)
    m, aa, sil = (PHONE_LABELS.index(p) for p in ("M", "AA", "SIL"))
    assert classes.tolist() == [sil, m, m, aa, aa, aa, NO_PHONE, NO_PHONE]
    aligned = source_classes(classes, "alignment")
    assert aligned.tolist() == [c + ALIGNED_OFFSET if c >= 0 else NO_PHONE for c in classes]
    assert PhoneTrack(phones, "alignment").classes(8).tolist() == aligned.tolist()
    assert PhoneTrack(phones, "loop").classes(8).tolist() == classes.tolist()


def test_long_audio_decodes_from_a_script_without_a_main_guard(tmp_path):
    # Worker processes must not re-import the caller's main module (multiprocessing's spawn
    # does, and fails in scripts like this one).
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\n"
        "from emotalk_core.phonetics import loop\n"
        "rng = np.random.default_rng(0)\n"
        "audio = (rng.normal(0, 0.05, 16000 * 70) * np.sin(np.arange(16000 * 70) / 900.0))\n"
        "phones = loop.decode(audio.astype(np.float32), workers=2)\n"
        "print('decoded', len(phones), phones[-1][2])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("decoded") and done.stdout.split()[-1] == "70.0"


def test_a_missing_pocketsphinx_is_a_dependency_error(monkeypatch):
    from emotalk_core.errors import DependencyError
    from emotalk_core.phonetics import loop

    monkeypatch.setattr(loop, "_decoder", [])
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import fails
    with pytest.raises(DependencyError, match="no module named 'pocketsphinx'") as caught:
        loop._get_decoder()
    assert caught.value.kind == "dependency"


DEMO = Path(__file__).parents[1] / "emotalk_core" / "data" / "demo"


def test_word_recognition_finds_the_bilabials_of_a_real_voice():
    # The demo clip (CMU ARCTIC awb, held out from training): "And you always want to see it
    # in the superlative degree." has one bilabial, the P of "superlative".
    audio = load_audio(DEMO / "arctic_a0007.wav")
    aligned = phone_track(audio, (DEMO / "arctic_a0007.txt").read_text())
    found = phone_track(audio, recognize_words=True)
    assert found.source == "recognition" and not found.warnings and not found.loop_spans
    assert tiles(found.phones, audio.size / 16000)
    want, got = bilabial_centres(aligned.phones), bilabial_centres(found.phones)
    assert want.size == got.size == 1 and abs(got[0] - want[0]) < 0.05
    # recognised words are read as aligned phones, and their bilabials shut the lips
    frames = num_frames(audio.size)
    assert (found.classes(frames) >= ALIGNED_OFFSET).sum() > 0.9 * frames
    closed = aligned_closures(found, frames)
    assert closed.sum() > 0 and abs(np.flatnonzero(closed).mean() / 30 - want[0]) < 0.05
    assert not aligned_closures(PhoneTrack(found.phones, "loop"), frames).any()


def test_windows_cut_long_audio_in_its_pauses(utterance):
    pause = np.zeros(int(0.6 * 16000), np.float32)
    once = np.concatenate([utterance.audio, pause])
    audio = np.tile(once, int(np.ceil(95 * 16000 / once.size)))
    windows = recognize.plan_windows(audio)
    assert windows[0][0] == 0 and windows[-1][1] == audio.size
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    assert all(b - a <= recognize.WINDOW_S * 16000 for a, b in windows) and len(windows) == 4
    for _, cut in windows[:-1]:  # every cut falls in a pause
        assert not np.abs(audio[cut - 800: cut + 800]).any()


LINES = ("Bob made a map of the big blue pool.", "My brother plays the piano every morning.",
         "The boat moved slowly past the old bridge.", "Please bring me a bowl of warm soup.",
         "Maybe the bus will be late again today.", "Mark bought a bike for his birthday.",
         "We watched the moon rise above the mountains.", "Paul kept his promise to his mother.",
         "A bright lamp burned by the open window.", "The baby smiled and waved both hands.",
         "Emma painted the barn a pale shade of brown.", "Bring the maps before the meeting.")


def test_word_recognition_of_long_audio_aligns_over_processes():
    pause = np.zeros(int(0.6 * 16000), np.float32)
    spoken = [synthesize(line, VoiceSettings("en-us+m3")) for line in LINES]
    audio, expected, at = [], [], 0.0
    for _ in range(2):  # 12 lines twice: about 70 s, three windows
        for speech in spoken:
            expected += [at + (p.start + p.end) / 2 for p in speech.phones
                         if p.phone in BILABIALS]
            audio += [speech.audio, pause]
            at += (speech.audio.size + pause.size) / 16000
    audio = np.concatenate(audio)
    progress = []
    found = recognize.recognize(audio, workers=2, progress=lambda d, t: progress.append((d, t)))
    assert tiles(found.phones, audio.size / 16000) and not found.loop_spans
    assert progress == [(3, 6), (6, 6)]  # three windows: heard, then read
    # the lines' bilabials, nearly all found within 50 ms of where espeak-ng put them
    got = bilabial_centres(found.phones)
    errors = np.array([min(abs(got - e)) for e in expected])
    assert np.mean(errors < 0.05) > 0.9 and abs(len(got) - len(expected)) <= 0.1 * len(expected)
    # worker processes give exactly what this process gives
    assert recognize.recognize(audio, workers=1).phones == found.phones


def test_speech_whisper_cannot_trust_is_read_by_the_phone_loop():
    french = synthesize("Le petit chat boit du lait dans la cuisine pendant que maman "
                        "prépare le repas.", VoiceSettings("fr")).audio
    found = phone_track(french, recognize_words=True)
    assert found.source == "recognition" and found.loop_spans == [(0.0, french.size / 16000)]
    assert "held no English words that could be trusted" in found.warnings[0]
    assert found.phones == loop.decode(french)
    frames = num_frames(french.size)
    assert (found.classes(frames) < ALIGNED_OFFSET).all()  # read as the loop's phones
    assert not aligned_closures(found, frames).any()
    # within a clip, only the stretch that was not recognised goes to the loop
    mixed = PhoneTrack([("M", 0.0, 0.5), ("M", 0.5, 1.0)], "recognition", loop_spans=[(0.5, 1.0)])
    assert aligned_closures(mixed, 30).tolist() == [1.0] * 15 + [0.0] * 15


def test_whisper_checks_its_own_text():
    assert recognize.judge("", -0.2, 0.0) == ("", True)  # nothing said
    assert recognize.judge("Thank you.", -1.5, 0.9) == ("", True)  # no speech
    assert recognize.judge("I'm not sure if I can.", -2.0, 0.3) == ("I'm not sure if I can.",
                                                                    False)
    loop_text = " ".join(["montreal forceliner"] * 20)
    assert recognize.judge(loop_text, -0.3, 0.0) == (loop_text, False)  # decoding looped
    assert recognize.judge("Bob made a map.", -0.3, 0.0) == ("Bob made a map.", True)
    # sound captions are not speech: nothing to align, or the words around them
    assert recognize.judge("[Music]", -0.3, 0.1) == ("", True)
    assert recognize.judge("♪ (upbeat music) ♪", -0.4, 0.2) == ("", True)
    assert recognize.judge("(laughs) Maybe, *sigh* maybe.", -0.3, 0.0) == ("Maybe, maybe.", True)
    assert recognize.spoken("I'm a f***ing man!") == "I'm a f***ing man!"  # a word, censored


def test_word_recognition_failure_falls_back_to_the_loop_with_a_warning(monkeypatch, utterance):
    monkeypatch.setenv(recognize.MODEL_ENV, "/nowhere/whisper")
    monkeypatch.setattr(recognize._Whisper, "_loaded", None)
    found = phone_track(utterance.audio, recognize_words=True)
    assert found.source == "loop" and found.phones == loop.decode(utterance.audio)
    assert len(found.warnings) == 1 and "word recognition failed" in found.warnings[0]
    assert "EMOTALK_WHISPER_MODEL=/nowhere/whisper: no CTranslate2 Whisper model" in \
        found.warnings[0]


def test_word_recognition_can_be_cancelled(utterance):
    with pytest.raises(Cancelled):
        phone_track(utterance.audio, recognize_words=True, cancel=lambda: True)


def test_a_transcript_comes_before_word_recognition(utterance):
    found = phone_track(utterance.audio, TEXT, recognize_words=True)
    assert found.source == "alignment" and found.phones == phone_track(utterance.audio,
                                                                       TEXT).phones


def test_an_unknown_phone_job_is_refused(utterance):
    with pytest.raises(ValueError, match="unknown phone job"):
        loop.do_job("guess", utterance.audio, "")


def test_word_recognition_leaves_torch_its_threads(monkeypatch, utterance):
    import torch

    monkeypatch.setattr(recognize._Whisper, "_loaded", None)  # load it again
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        phone_track(utterance.audio, recognize_words=True)
        assert torch.get_num_threads() == 2  # the network keeps both cores
    finally:
        torch.set_num_threads(before)


def test_words_that_do_not_align_leave_their_window_to_the_loop(monkeypatch, utterance):
    do_job = loop.do_job

    def failing_alignment(kind, samples, words):
        return None if kind == "align" else do_job(kind, samples, words)

    monkeypatch.setattr(loop, "do_job", failing_alignment)
    found = recognize.recognize(utterance.audio)
    assert found.loop_spans == [(0.0, utterance.seconds)]
    assert found.phones == loop.decode(utterance.audio)
    assert "held no English words that could be trusted" in found.warnings[0]


def test_a_window_without_words_is_read_by_the_loop_without_a_warning():
    # Whisper hears nothing in pauses, and in some speech of other languages too: the phone
    # loop reads such windows (a pause then, with no alarm), never a pause taken for certain
    quiet = np.random.default_rng(0).normal(0, 1e-4, 3 * 16000).astype(np.float32)
    found = phone_track(quiet, recognize_words=True)
    assert found.source == "recognition" and not found.warnings
    assert found.loop_spans == [(0.0, 3.0)] and found.phones == loop.decode(quiet)
    assert (found.classes(90) < ALIGNED_OFFSET).all()
