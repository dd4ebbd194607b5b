"""The trainer: exact resume, Ctrl-C checkpoints, the exported model, bad clips, the freeze
schedule, overfitting a tiny corpus, and torchrun with two CPU processes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emotalk_core.controls import Controls, EmotionControl
from emotalk_core.inference import Predictor
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest
from emotalk_core.model import EmoTalk
from training.config import ConfigError, build_model_config, load_config
from training.train import is_encoder_parameter, lr_factor, run, seed_everything

from .test_training_corpus import make_corpus

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "training" / "configs" / "tiny.toml"
QUICK = ["train.log_interval=1", "train.presets=false", "data.batch_size=3"]


def tiny(*overrides: str):
    return load_config(TINY, [*QUICK, *overrides])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, persons=2, contents=2, val_contents=1, seconds=(0.5, 0.8))
    return root


def records(run_dir: Path, split: str | None = None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    out = [json.loads(line) for line in lines if line.strip()]
    return [r for r in out if r.get("split") == split]


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step_{step}" / "model" /
                         "model.safetensors"))


def test_resume_continues_bit_identically(corpus, tmp_path):
    # Dropout and augmentation on: the random states must be restored, not just the weights.
    cfg = tiny("train.steps=8", "train.val_interval=3", "train.checkpoint_interval=3",
               "augment.enabled=true", "augment.noise_probability=0.5",
               "model.decoder.dropout=0.2", "model.content_encoder.dropout=0.1")
    straight = run(cfg, corpus, tmp_path / "straight", max_steps=6)
    first = run(cfg, corpus, tmp_path / "split", max_steps=3)
    assert first.step == 3 and first.stopped == "max_steps"
    resumed = run(cfg, corpus, tmp_path / "split", max_steps=6, resume=True)
    assert straight.step == resumed.step == 6
    a, b = weights(tmp_path / "straight", 6), weights(tmp_path / "split", 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def drop_time(rs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]

    assert drop_time(records(tmp_path / "straight")) == drop_time(records(tmp_path / "split"))
    assert records(tmp_path / "straight", "val") == records(tmp_path / "split", "val")
    assert len(records(tmp_path / "split")) == 6
    assert straight.best_val_loss == resumed.best_val_loss
    state = torch.load(tmp_path / "split" / "checkpoints" / "step_6" / "trainer.pt",
                       weights_only=False)
    assert {"optimizer", "scheduler", "scaler", "sampler"} <= set(state)
    rng = torch.load(tmp_path / "split" / "checkpoints" / "step_6" / "rng_rank0.pt",
                     weights_only=False)
    assert {"python", "numpy", "torch"} <= set(rng)


def test_exported_model_loads_with_presets_and_logs_metrics(corpus, tmp_path):
    cfg = tiny("train.val_interval=2", "train.presets=true")
    result = run(cfg, corpus, tmp_path / "run", max_steps=4)
    train, val = records(tmp_path / "run"), records(tmp_path / "run", "val")
    assert [r["step"] for r in train] == [1, 2, 3, 4] and [r["step"] for r in val] == [2, 4]
    for key in ("loss", "cross", "self", "velocity", "emotion", "lr", "grad_norm"):
        assert np.isfinite(train[-1][key])
    for key in ("loss", "lve_coeff", "eve_coeff", "emotion_accuracy", "clips"):
        assert val[-1][key] is not None
    assert result.best_val_loss == min(r["loss"] for r in val)
    predictor = Predictor(tmp_path / "run" / "model", device="cpu")
    assert set(predictor.presets) == {"neutral", "happy", "sad"}
    entry = read_manifest(corpus / "manifest.jsonl")[0]
    out = predictor.predict(entry.audio, controls=Controls(
        emotion=EmotionControl(source="preset", preset="happy")))
    assert out.values.shape[1] == 52 and np.isfinite(out.values).all()
    meta = predictor.loaded.metadata
    assert meta["step"] == [r["step"] for r in val if r["best"]][-1]
    assert meta["val_loss"] == pytest.approx(result.best_val_loss)
    if importlib.util.find_spec("tensorboard") is not None:
        assert (tmp_path / "run" / "tensorboard").is_dir()
    with pytest.raises(ConfigError, match="already holds a run"):
        run(cfg, corpus, tmp_path / "run", max_steps=5)


def test_ctrl_c_saves_a_resumable_checkpoint(corpus, tmp_path):
    cfg = tiny("train.val_interval=0", "train.checkpoint_interval=100")
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job

    def interrupt(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = run(cfg, corpus, tmp_path / "run", max_steps=10, on_step=interrupt)
    assert result.stopped == "signal:SIGINT" and result.step == 2
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "trainer.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    resumed = run(cfg, corpus, tmp_path / "run", max_steps=3, resume=True)
    assert resumed.step == 3 and [r["step"] for r in records(tmp_path / "run")] == [1, 2, 3]
    other = tiny("train.val_interval=0", "model.decoder.ffn_size=32")
    with pytest.raises(ConfigError, match=r"\[model\] section differs"):
        run(other, corpus, tmp_path / "run", max_steps=4, resume=True)


def test_bad_clips_are_skipped_counted_and_reported(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    entries = read_manifest(corpus / "manifest.jsonl")
    data = tmp_path / "data"
    bad = [ManifestEntry("broken", tmp_path / "missing.wav", "train", tmp_path / "x.npy",
                         emotion="sad", person=0, content_id="c0")]
    write_manifest(data / "manifest.jsonl", entries + bad)
    result = run(tiny("train.val_interval=0"), data, tmp_path / "run", max_steps=2)
    assert [s.clip_id for s in result.skipped] == ["broken"]
    report = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert report[0]["clip_id"] == "broken" and "missing.wav" in report[0]["reason"]
    assert records(tmp_path / "run")[-1]["skipped_clips"] == 1
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "model" / "config.json").is_file()  # no validation: last weights


def test_freeze_schedule_keeps_encoders_and_moves_the_rest(corpus, tmp_path):
    cfg = tiny("train.val_interval=0", "train.freeze_encoders_steps=2",
               "train.checkpoint_interval=2")
    run(cfg, corpus, tmp_path / "run", max_steps=2)
    seed_everything(cfg.seed)
    initial = EmoTalk(build_model_config(cfg.model)).state_dict()
    trained = weights(tmp_path / "run", 2)
    for name, value in trained.items():
        same = torch.equal(value, initial[name])
        if is_encoder_parameter(name):
            assert same, name
    assert not torch.equal(trained["head.weight"], initial["head.weight"])
    assert not torch.equal(trained["emotion_encoder.classifier.out_proj.weight"],
                           initial["emotion_encoder.classifier.out_proj.weight"])


def test_schedule_warms_up_then_decays():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(500, 10, 100, 0.1) == pytest.approx(0.1)


@pytest.mark.slow
def test_tiny_model_overfits_a_tiny_corpus(tmp_path):
    make_corpus(tmp_path / "data", persons=1, contents=2, val_contents=0, seconds=(0.5, 0.8))
    cfg = tiny("train.val_interval=0", "train.steps=60", "optim.lr=3e-3")
    start = time.monotonic()
    run(cfg, tmp_path / "data", tmp_path / "run")
    elapsed = time.monotonic() - start
    losses = [r["loss"] for r in records(tmp_path / "run")]
    assert min(losses[-5:]) < losses[0] / 10, losses
    print(f"overfit: loss {losses[0]:.4f} -> {min(losses[-5:]):.4f} in {elapsed:.1f} s")


@pytest.mark.slow
def test_torchrun_two_cpu_processes(corpus, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training.train", "--config", str(TINY), "--data", str(corpus), "--out",
           str(out), "--max-steps", "4", "--device", "cpu",
           *[f"--set={s}" for s in (*QUICK, "train.val_interval=2", "train.presets=true",
                                    "data.batch_size=2")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["step"] for r in records(out)] == [1, 2, 3, 4]
    assert len(records(out, "val")) == 2
    ckpt = out / "checkpoints" / "step_4"
    assert (ckpt / "rng_rank0.pt").is_file() and (ckpt / "rng_rank1.pt").is_file()
    assert set(Predictor(out / "model", device="cpu").presets) == {"neutral", "happy", "sad"}
    state = torch.load(ckpt / "trainer.pt", weights_only=False)
    assert state["world"] == 2


def test_loader_workers_change_nothing(corpus, tmp_path):
    """Samples are functions of their keys: worker processes give the same run."""
    trained = {}
    for workers in (0, 2):
        cfg = tiny("train.val_interval=0", "train.checkpoint_interval=2", "augment.enabled=true",
                   f"data.num_workers={workers}")
        run(cfg, corpus, tmp_path / f"run{workers}", max_steps=2)
        trained[workers] = weights(tmp_path / f"run{workers}", 2)
    assert all(torch.equal(trained[0][k], trained[2][k]) for k in trained[0])


@pytest.mark.slow
def test_full_config_trains_with_pretrained_wav2vec2_folders(corpus, tmp_path):
    """emotalk_full.toml end to end on CPU, with tiny stand-ins for the pretrained encoders."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model

    from .conftest import tiny_wav2vec2_fields

    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(**tiny_wav2vec2_fields())).save_pretrained(tmp_path / "c")
    Wav2Vec2Model(Wav2Vec2Config(**tiny_wav2vec2_fields())).save_pretrained(tmp_path / "e")
    cfg = load_config(ROOT / "training" / "configs" / "emotalk_full.toml", [
        f"model.pretrained_content={tmp_path / 'c'}", f"model.pretrained_emotion={tmp_path / 'e'}",
        "data.batch_size=2", "data.num_workers=0", "train.val_interval=2",
        "train.log_interval=1", "train.freeze_encoders_steps=1"])
    result = run(cfg, corpus, tmp_path / "run", max_steps=3)
    assert result.step == 3 and len(records(tmp_path / "run", "val")) == 2
    predictor = Predictor(tmp_path / "run" / "model", device="cpu")
    assert predictor.model.config.kind == "wav2vec2" and predictor.presets


def test_phone_head_trains_and_validation_reports_lip_closure(tmp_path):
    from .test_training_dataset import alternating_phones, with_phones

    make_corpus(tmp_path / "data", persons=1, contents=2, val_contents=1, seconds=(0.8, 1.0))
    with_phones(tmp_path / "data" / "manifest.jsonl", alternating_phones)
    cfg = tiny("train.val_interval=15", "model.phone_head=true", "loss.phone=1.0",
               "loss.aperture=1.0", "data.manifest=\"phones.jsonl\"")
    run(cfg, tmp_path / "data", tmp_path / "run", max_steps=30)
    train, val = records(tmp_path / "run"), records(tmp_path / "run", "val")
    assert all(np.isfinite(r["phone"]) and np.isfinite(r["aperture"]) for r in train)
    # the phone head learns: SIL / M / AA alternate on a fixed grid (from ln 40 = 3.7)
    assert np.mean([r["phone"] for r in train[-5:]]) < 0.7 * train[0]["phone"]
    assert 0.0 <= val[-1]["lip_closure_auc"] <= 1.0 and val[-1]["bilabial_frames"] > 0
    validation_clips = sum(e.split == "val" for e in read_manifest(tmp_path / "data" /
                                                                   "phones.jsonl"))
    assert val[-1]["clips"] == validation_clips  # a mean over clips, not over frames
    predictor = Predictor(tmp_path / "run" / "model", device="cpu")
    assert predictor.model.phone_head is not None
    entry = read_manifest(tmp_path / "data" / "phones.jsonl")[0]
    assert predictor.predict(entry.audio).values.shape[1] == 52
