"""Evaluation metrics on hand-made cases, the head-mesh loader, and the evaluate command."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from emotalk_core.arkit import INDEX
from emotalk_core.head import build_head, drive, save_npz
from emotalk_core.manifest import read_manifest
from emotalk_core.phonetics.track import frame_phones
from training import evaluate as E
from training import metrics as M

from .test_training_corpus import make_corpus


def curves(frames: int, **channels: float | np.ndarray) -> np.ndarray:
    out = np.zeros((frames, 52), np.float32)
    for name, value in channels.items():
        out[:, INDEX[name]] = value
    return out


# -- AUC ------------------------------------------------------------------------------------------
def test_auc_hand_made_cases():
    assert M.auc(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0])) == 1.0
    assert M.auc(np.array([0.0, 1.0]), np.array([3.0, 4.0])) == 0.0
    assert M.auc(np.full(4, 0.3), np.full(3, 0.3)) == 0.5  # ties count half
    # pairs: (2>1) (2=2) (2<3), (4>1) (4>2) (4>3): (4 + 0.5) / 6
    assert M.auc(np.array([2.0, 4.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(4.5 / 6)
    assert np.isnan(M.auc(np.array([]), np.array([1.0])))


def test_lip_closure_perfect_and_constant():
    phones = ["AA", "AA", "M", "M", "AE1", "P", "S", None]
    open_mouth = np.array([0.8, 0.7, 0.0, 0.1, 0.9, 0.05, 0.3, 0.0])
    perfect = curves(8, jawOpen=open_mouth)
    scores = M.ClosureScores.empty()
    scores.add(phones, {"model": M.aperture(perfect), "flat": M.aperture(curves(8))})
    assert scores.auc("model") == 1.0 and scores.auc("flat") == 0.5
    assert scores.counts() == (3, 3)  # open vowels, bilabials
    assert M.phone_class("ah0") == "vowel" and M.phone_class("B") == "bilabial"
    assert M.phone_class("IY") is None and M.phone_class(None) is None


def test_aperture_formula():
    c = curves(1, jawOpen=0.5, mouthClose=0.1, mouthLowerDownLeft=0.4, mouthLowerDownRight=0.2,
               mouthUpperUpLeft=0.8, mouthUpperUpRight=0.0)
    assert M.aperture(c)[0] == pytest.approx(0.5 - 0.1 + 0.5 * 0.3 + 0.25 * 0.4)


def test_energy_baseline_follows_loudness():
    audio = np.concatenate([np.zeros(1600), 0.5 * np.ones(1600)]).astype(np.float32)
    rms = M.frame_log_rms(audio, 7)  # the 7th frame is past the end
    assert rms.shape == (7,) and rms[0] < -15 and rms[4] == pytest.approx(np.log(0.5), abs=1e-6)
    assert rms[6] == rms[0]


def test_frame_phones_rule():
    phones = [("SIL", 0.0, 0.05), ("M", 0.05, 0.1), ("AA", 0.1, 0.2)]
    frames = frame_phones(phones, 8)
    # frame centres: 0.0167, 0.05, 0.0833, 0.1167, 0.15, 0.1833, 0.2167, ...
    assert frames == ["SIL", "M", "M", "AA", "AA", "AA", None, None]


# -- vertex errors --------------------------------------------------------------------------------
def test_coefficient_errors():
    true = curves(4, jawOpen=0.2, browInnerUp=0.1)
    assert M.coefficient_lve(true, true) == 0 and M.coefficient_eve(true, true) == 0
    pred = true.copy()
    pred[:2, INDEX["mouthSmileLeft"]] += 0.3  # lips, two of four frames
    pred[:, INDEX["jawOpen"]] += 0.1
    pred[:, INDEX["cheekPuff"]] += 0.9  # in neither group
    assert M.coefficient_lve(pred, true) == pytest.approx((0.3 + 0.3 + 0.1 + 0.1) / 4)
    assert M.coefficient_eve(pred, true) == 0


def synthetic_head() -> dict[str, np.ndarray]:
    """Six vertices: 0-2 lips, 3-5 eyes; jawOpen drops vertex 1 by 10 mm, browInnerUp lifts
    vertex 4 by 5 mm."""
    base = np.arange(18, dtype=np.float64).reshape(6, 3) * 10
    deltas = np.zeros((52, 6, 3))
    deltas[INDEX["jawOpen"], 1] = (0, -10, 0)
    deltas[INDEX["browInnerUp"], 4] = (0, 5, 0)
    return {"base": base, "deltas": deltas, "lip_vertices": np.array([0, 1, 2]),
            "eye_vertices": np.array([3, 4, 5])}


def test_mesh_errors_in_mm(tmp_path):
    np.savez(tmp_path / "head.npz", **synthetic_head())
    head = M.load_head(tmp_path / "head.npz")
    true = curves(3, jawOpen=0.2)
    assert M.mesh_lve(head, true, true) == 0 and M.mesh_eve(head, true, true) == 0
    pred = curves(3, jawOpen=np.array([0.7, 0.2, 0.2]), browInnerUp=0.4)
    assert M.mesh_lve(head, pred, true) == pytest.approx(5.0 / 3)
    assert M.mesh_eve(head, pred, true) == pytest.approx(2.0)
    moved = drive(head, pred)
    assert moved.shape == (3, 6, 3) and moved[0, 1, 1] == pytest.approx(40 - 7.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"deltas": np.zeros((51, 6, 3))}, "deltas have shape"),
    ({"base": np.zeros((6, 2))}, "base has shape"),
    ({"lip_vertices": np.array([0, 9])}, "out of range"),
    ({"eye_vertices": np.array([], dtype=int)}, "non-empty"),
])
def test_head_mesh_problems(tmp_path, change, message):
    np.savez(tmp_path / "head.npz", **{**synthetic_head(), **change})
    with pytest.raises(M.HeadError, match=message):
        M.load_head(tmp_path / "head.npz")


def test_head_mesh_missing_parts(tmp_path):
    data = synthetic_head()
    del data["eye_vertices"]
    np.savez(tmp_path / "head.npz", **data)
    with pytest.raises(M.HeadError, match="lacks eye_vertices"):
        M.load_head(tmp_path / "head.npz")
    with pytest.raises(M.HeadError, match="does not exist"):
        M.load_head(tmp_path / "none.npz")


def test_demo_head_file_measures_like_the_built_head(tmp_path):
    demo = build_head("low")
    loaded = M.load_head(save_npz(demo, tmp_path / "head.npz"))
    rng = np.random.default_rng(0)
    pred, true = rng.uniform(0, 1, (2, 5, 52)).astype(np.float32)
    assert M.mesh_lve(loaded, pred, true) == M.mesh_lve(demo, pred, true) > 0
    assert M.mesh_eve(loaded, pred, true) == M.mesh_eve(demo, pred, true) > 0
    assert np.array_equal(drive(loaded, pred), drive(demo, pred))


# -- the evaluate command -------------------------------------------------------------------------
def test_evaluate_report_table_and_plots(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    make_corpus(data, persons=1, contents=1, val_contents=1, seconds=(0.6, 0.8))
    val = [e for e in read_manifest(data / "manifest.jsonl") if e.split == "val"]
    (data / "phones").mkdir()
    (data / "phones" / f"{val[0].clip_id}.json").write_text(json.dumps(
        [["SIL", 0, 0.1], ["M", 0.1, 0.2], ["AA1", 0.2, 0.4], ["B", 0.4, 0.5]]))
    (data / "phones" / f"{val[1].clip_id}.json").write_text(json.dumps(
        {"phones": [{"phone": "P", "start": 0.0, "end": 0.1},
                    {"phone": "AE", "start": 0.1, "end": 0.3}]}))
    (data / "phones" / f"{val[2].clip_id}.json").write_text("[[1, 2]]")  # broken: reported
    np.savez(tmp_path / "head.npz", **synthetic_head())
    out = tmp_path / "report.json"
    plots = tmp_path / "plots"
    with_plots = importlib.util.find_spec("matplotlib") is not None  # the [train] extra
    code = E.main(["--model", str(tiny_model_dir), "--data", str(data), "--head",
                   str(tmp_path / "head.npz"), "--out", str(out), "--device", "cpu",
                   *(["--plots", str(plots)] if with_plots else [])])
    assert code == 0
    table = capsys.readouterr().out
    assert "lip-closure AUC model" in table and "LVE mm" in table
    report = json.loads(out.read_text())
    assert report["clips"] == 3 and report["split"] == "val"
    for key in ("lve_coeff", "eve_coeff", "lve_mm", "eve_mm", "mse"):
        assert report[key] >= 0
    closure = report["lip_closure"]
    assert closure["bilabial_frames"] == 3 + 3 + 3 and closure["open_vowel_frames"] == 6 + 6
    assert closure["clips_with_phones"] == 2
    assert 0 <= closure["auc_model"] <= 1 and 0 <= closure["auc_energy_baseline"] <= 1
    assert closure["auc_target"] > 0.5  # targets follow loudness: mouth opens on vowels
    assert val[2].clip_id in closure["phone_errors"][0]["clip_id"]
    # the tiny model's labels are neutral/happy/sad: all three clips are labelled
    assert report["emotion_clips"] == 3 and 0 <= report["emotion_accuracy"] <= 1
    if with_plots:
        assert sorted(p.name for p in plots.iterdir()) == sorted(f"{e.clip_id}.png" for e in val)


def test_evaluate_identical_model_scores_zero(tmp_path, monkeypatch):
    """A 'model' that returns the targets exactly: LVE and EVE are zero."""
    data = tmp_path / "data"
    make_corpus(data, persons=1, contents=1, val_contents=1, seconds=(0.6, 0.8))
    loaded = {}
    original = E._load

    def load(clip):
        audio, true = original(clip)
        loaded["true"] = true
        return audio, true

    class Exact:
        emotion_labels = ("neutral", "happy", "sad")

        def __init__(self, *args, **kwargs):
            pass

        def predict(self, audio, **kwargs):
            from emotalk_core.inference import Prediction

            probs = {"neutral": 1.0, "happy": 0.0, "sad": 0.0}
            return Prediction(loaded["true"], 30.0, 0.0, (), probs)

    monkeypatch.setattr(E, "_load", load)
    monkeypatch.setattr("emotalk_core.inference.Predictor", Exact)
    report = E.evaluate("oracle", data)
    assert report["lve_coeff"] == 0 and report["eve_coeff"] == 0 and report["mse"] == 0
    assert report["emotion_accuracy"] == pytest.approx(1 / 3)  # always says neutral


def test_evaluate_empty_split(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    make_corpus(data, persons=1, contents=1, val_contents=0)
    assert E.main(["--model", str(tiny_model_dir), "--data", str(data), "--device", "cpu"]) == 1


def test_evaluate_aligns_transcripts_or_says_why_not(tiny_model_dir, tmp_path):
    from emotalk_core.phonetics import align

    data = tmp_path / "data"
    make_corpus(data, persons=1, contents=1, val_contents=1, seconds=(0.8, 1.0))
    val = [e for e in read_manifest(data / "manifest.jsonl") if e.split == "val"]
    (data / "transcripts").mkdir()
    (data / "transcripts" / f"{val[0].clip_id}.txt").write_text("mama papa\n")
    report = E.evaluate(tiny_model_dir, data, device="cpu")
    closure = report["lip_closure"]
    if align.available():
        assert closure["clips_with_phones"] + len(closure["phone_errors"]) == 1
    else:  # no pocketsphinx: the clip is still evaluated, the missing phones are reported
        assert report["clips"] == 3 and closure["clips_with_phones"] == 0
        assert closure["phone_errors"][0]["clip_id"] == val[0].clip_id
