"""`emotalk` end to end: outputs, and every bad input giving one clear line, a non-zero exit and
no output file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from emotalk_core.arkit import CHANNELS
from emotalk_core.cli import main
from emotalk_core.export import read_curves

from .conftest import speechlike


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_writes_each_format(capsys, tmp_path, tiny_model_dir, speech_wav):
    for ext in ("npy", "json", "csv"):
        target = tmp_path / f"curves.{ext}"
        code, out, err = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                             "-o", str(target), "--fps", "24")
        assert code == 0, err
        assert f"wrote {target}" in out
        values, fps, channels = read_curves(target)
        assert values.shape == (48, 52) and channels == CHANNELS
    np.testing.assert_allclose(read_curves(tmp_path / "curves.csv")[0],
                               np.load(tmp_path / "curves.npy"), atol=1e-6)
    meta = json.loads((tmp_path / "curves.json").read_text())
    assert meta["fps"] == 24 and set(meta["metadata"]["emotion_probabilities"]) == {
        "neutral", "happy", "sad"}


def test_no_postprocess_gives_the_raw_network_output(capsys, tmp_path, tiny_model_dir, speech_wav):
    from emotalk_core.controls import Controls
    from emotalk_core.inference import Predictor

    target = tmp_path / "raw.npy"
    code, _, err = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                       "-o", str(target), "--no-postprocess")
    assert code == 0, err
    raw = Predictor(tiny_model_dir, device="cpu").predict(speech_wav,
                                                          controls=Controls(postprocess=None))
    np.testing.assert_array_equal(np.load(target), raw.values)
    assert np.load(target).max() > 1.0 or np.load(target).min() < 0.0  # not clamped


def test_controls_reach_the_predictor(capsys, tmp_path, tiny_model_dir, speech_wav):
    outputs = {}
    for name, extra in {
        "base": [], "happy": ["--emotion", "happy"], "person": ["--person-weights", "3:0.5,7:0.5"],
        "level": ["--level", "0"], "seed": ["--seed", "5"],
    }.items():
        target = tmp_path / f"{name}.npy"
        code, _, err = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                           "-o", str(target), *extra)
        assert code == 0, err
        outputs[name] = np.load(target)
    for name in ("happy", "person", "level"):
        assert not np.allclose(outputs[name], outputs["base"]), name


@pytest.fixture
def predict_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every `Predictor.predict` call (the real one still runs)."""
    from emotalk_core.inference import Predictor

    calls: list[dict] = []
    real = Predictor.predict

    def spy(self, audio, **kwargs):
        calls.append(kwargs)
        return real(self, audio, **kwargs)

    monkeypatch.setattr(Predictor, "predict", spy)
    return calls


def test_transcript_text_and_file_reach_the_predictor(capsys, tmp_path, tiny_model_dir,
                                                      speech_wav, predict_calls):
    text_file = tmp_path / "line.txt"
    text_file.write_bytes("\ufeffÇa va, Philip?\n".encode())  # UTF-8 with a byte-order mark
    base = ["predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
            str(tmp_path / "o.json")]
    for extra, want in ((["--transcript", "Author of the danger trail."],
                         "Author of the danger trail."),
                        (["--transcript-file", str(text_file)], "Ça va, Philip?")):
        code, out, err = run(capsys, *base, *extra)
        assert code == 0, err
        assert predict_calls[-1]["transcript"] == want
        # the tiny model has no phonetic input: the transcript reached it and was ignored
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("emotalk: warning: "), err
        assert "transcript was ignored" in lines[0] and "wrote" in out
    assert json.loads((tmp_path / "o.json").read_text())["metadata"]["phone_source"] is None
    code, _, err = run(capsys, *base)
    assert code == 0 and predict_calls[-1]["transcript"] is None and err == ""


def test_transcript_file_problems_are_one_clear_line(capsys, tmp_path, tiny_model_dir,
                                                     speech_wav, predict_calls):
    (tmp_path / "latin1.txt").write_bytes("Ça va".encode("latin-1"))
    (tmp_path / "folder.txt").mkdir()
    out = tmp_path / "o.npy"
    for name, needle in (("missing.txt", "transcript file not found"),
                         ("latin1.txt", "is not UTF-8 text"),
                         ("folder.txt", "is a folder, not a file")):
        code, _, err = run(capsys, "predict", str(speech_wav), "--model", str(tiny_model_dir),
                           "-o", str(out), "--transcript-file", str(tmp_path / name))
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("emotalk: error:"), err
        assert needle in lines[0] and name in lines[0], lines[0]
    assert not out.exists() and predict_calls == []  # refused before any work
    with pytest.raises(SystemExit) as info:  # argparse: not both
        main(["predict", str(speech_wav), "--transcript", "a", "--transcript-file", "b.txt"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_info(capsys, tiny_model_dir):
    code, out, _ = run(capsys, "info", "--model", str(tiny_model_dir), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "compact" and info["presets"] == ["neutral", "happy"]
    assert info["fps"] == 30 and info["persons"] == 24


def _bad_inputs(tmp):
    """name -> (audio path, extra args, text the error must contain)."""
    (tmp / "folder.wav").mkdir()
    (tmp / "text.wav").write_text("this is not audio\n" * 100)
    good = tmp / "good.wav"
    sf.write(good, speechlike(1.0), 16000)
    (tmp / "truncated.wav").write_bytes(good.read_bytes()[:30])
    sf.write(tmp / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = speechlike(1.0)
    nan[100] = np.nan
    sf.write(tmp / "nan.wav", nan, 16000, subtype="FLOAT")
    return {
        "missing": (tmp / "missing.wav", [], "missing.wav"),
        "directory": (tmp / "folder.wav", [], "folder"),
        "text": (tmp / "text.wav", [], "text.wav"),
        "truncated": (tmp / "truncated.wav", [], "truncated.wav"),
        "empty": (tmp / "empty.wav", [], "empty"),
        "nan": (tmp / "nan.wav", [], "NaN"),
        "window outside": (good, ["--start", "5"], "start"),
        "window reversed": (good, ["--start", "0.8", "--end", "0.2"], "end"),
        "unknown preset": (good, ["--emotion", "joyful"], "joyful"),
        "person out of range": (good, ["--person", "24"], "person 24"),
        "bad person weights": (good, ["--person-weights", "3:x"], "person-weights"),
        "strength": (good, ["--emotion", "happy", "--emotion-strength", "2"], "strength"),
        "missing output folder": (good, ["-o", str(tmp / "no" / "such" / "out.npy")], "no/such"),
        "unknown output format": (good, ["-o", str(tmp / "out.mp4")], ".mp4"),
    }


def test_every_bad_input_is_one_clear_line(capsys, tmp_path, tiny_model_dir):
    for name, (audio, extra, needle) in _bad_inputs(tmp_path).items():
        out_args = [] if "-o" in extra else ["-o", str(tmp_path / "out.npy")]
        code, out, err = run(capsys, "predict", str(audio), "--model", str(tiny_model_dir),
                             *out_args, *extra)
        assert code == 1, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("emotalk: error:"), (name, err)
        assert needle in lines[0], (name, lines[0])
        assert not (tmp_path / "out.npy").exists(), name
        assert not list(tmp_path.glob(".out.npy*")), name  # no temporary leftovers


def test_bad_model_folders(capsys, tmp_path, speech_wav):
    code, _, err = run(capsys, "predict", str(speech_wav), "--model", str(tmp_path / "none"),
                       "-o", str(tmp_path / "o.npy"))
    assert code == 1 and "does not exist" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    code, _, err = run(capsys, "predict", str(speech_wav), "--model", str(tmp_path / "broken"),
                       "-o", str(tmp_path / "o.npy"))
    assert code == 1 and "corrupt" in err


@pytest.mark.parametrize(("rate", "channels", "subtype", "ext"), [
    (8000, 1, "PCM_U8", "wav"), (44100, 2, "PCM_24", "wav"), (192000, 6, "FLOAT", "wav"),
    (22050, 1, None, "flac"), (48000, 2, None, "ogg"), (44100, 1, None, "mp3"),
])  # fmt: skip
def test_common_formats_and_rates_work(capsys, tmp_path, tiny_model_dir, rate, channels,
                                       subtype, ext):
    t = np.arange(int(1.5 * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    data = np.repeat(mono[:, None], channels, axis=1).astype(np.float32)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, data, rate, subtype=subtype)
    code, _, err = run(capsys, "predict", str(path), "--model", str(tiny_model_dir),
                       "-o", str(tmp_path / "o.npy"))
    assert code == 0, err
    assert abs(np.load(tmp_path / "o.npy").shape[0] - 45) <= 1  # MP3 may pad a few samples


def test_console_script_exit_codes(tmp_path, tiny_model_dir, speech_wav):
    exe = [sys.executable, "-m", "emotalk_core"]
    ok = subprocess.run([*exe, "predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
                         str(tmp_path / "c.csv")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "c.csv").read_text().startswith("Timecode,BlendShapeCount,EyeBlinkLeft")
    bad = subprocess.run([*exe, "predict", str(tmp_path / "nope.wav"), "--model",
                          str(tiny_model_dir)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "nope.wav" in bad.stderr and "Traceback" not in bad.stderr


def test_presets_are_computed_from_a_labelled_manifest(capsys, tmp_path, tiny_model_dir):
    import shutil

    import torch

    from emotalk_core.checkpoint import load_model
    from emotalk_core.inference import Predictor
    from emotalk_core.manifest import ManifestEntry, write_manifest

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    entries = []
    for i, emotion in enumerate(["sad", "happy", "sad", "angry"]):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, speechlike(1.0 + 0.2 * i, seed=10 + i), 16000)
        entries.append(ManifestEntry(clip_id=f"c{i}", audio=path, split="train", emotion=emotion))
    entries.append(ManifestEntry(clip_id="v", audio=tmp_path / "clip0.wav", split="val",
                                 emotion="calm"))
    write_manifest(tmp_path / "manifest.jsonl", entries)
    code, out, err = run(capsys, "presets", "--model", str(model), "--manifest",
                         str(tmp_path / "manifest.jsonl"))
    assert code == 0, err
    loaded = load_model(model)
    assert list(loaded.presets) == ["happy", "sad", "angry"]  # RAVDESS order, train split only
    predictor = Predictor(loaded)
    expected = (predictor.emotion_embedding(tmp_path / "clip0.wav")
                + predictor.emotion_embedding(tmp_path / "clip2.wav")) / 2
    torch.testing.assert_close(loaded.presets["sad"], expected, atol=1e-5, rtol=1e-5)
    code, _, err = run(capsys, "presets", "--model", str(model), "--manifest",
                       str(tmp_path / "manifest.jsonl"), "--split", "test")
    assert code == 1 and "no emotion-labelled clips" in err


def test_recognize_words_reaches_the_predictor(capsys, tmp_path, tiny_model_dir, speech_wav,
                                               predict_calls):
    base = ["predict", str(speech_wav), "--model", str(tiny_model_dir), "-o",
            str(tmp_path / "o.npy")]
    for extra, want in (([], True), (["--no-recognize-words"], False),
                        (["--recognize-words"], True)):
        code, _, err = run(capsys, *base, *extra)
        assert code == 0, err
        assert predict_calls[-1]["controls"].recognize_words is want
