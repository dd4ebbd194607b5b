"""A tiny corpus made with numpy for the training tests (until the synthetic corpus exists):
speech-like audio and smooth target curves that follow the audio's loudness, with an offset
per emotion, written as .wav/.npy plus a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from emotalk_core.arkit import INDEX, NUM_CHANNELS
from emotalk_core.audio import num_frames
from emotalk_core.manifest import ManifestEntry, read_manifest, write_manifest

EMOTION_CHANNELS = {"happy": "mouthSmileLeft", "sad": "browInnerUp", "angry": "browDownLeft"}
# Emotion is audible: each one has its own pitch (and the persons their own register).
EMOTION_F0 = {"neutral": 120.0, "happy": 210.0, "sad": 85.0, "angry": 160.0}


def voice(seconds: float, f0: float, seed: int, sr: int = 16000) -> np.ndarray:
    """Harmonic 'syllables' (random bumps at about 4 per second) on a gliding pitch."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    envelope = np.zeros_like(t)
    for centre in rng.uniform(0.05, seconds - 0.05, max(1, int(4 * seconds))):
        envelope += np.exp(-0.5 * ((t - centre) / rng.uniform(0.03, 0.07)) ** 2)
    envelope = np.minimum(envelope, 1.0)
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.2 * envelope * harmonics + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def target_curves(audio: np.ndarray, emotion: str | None, seed: int) -> np.ndarray:
    """(T, 52) curves: mouth channels follow the 30 fps loudness, one channel per emotion is
    raised, and the rest drift slowly. Values stay within about [0, 0.8]."""
    frames = num_frames(audio.size)
    edges = np.round(np.arange(frames + 1) * 16000 / 30).astype(int)
    rms = np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0
                    for a, b in zip(edges[:-1], edges[1:], strict=True)])
    env = rms / (rms.max() + 1e-8)
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 30.0
    curves = 0.1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5, NUM_CHANNELS)[None] * t[:, None]
                                 + rng.uniform(0, 6, NUM_CHANNELS)[None])
    for name in ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight"):
        curves[:, INDEX[name]] = 0.05 + 0.6 * env
    curves[:, INDEX["mouthClose"]] = 0.3 * (1 - env)
    if emotion in EMOTION_CHANNELS:
        curves[:, INDEX[EMOTION_CHANNELS[emotion]]] += 0.4
    return curves.astype(np.float32)


def make_corpus(
    root: Path,
    persons: int = 2,
    contents: int = 2,
    emotions: tuple[str, ...] = ("neutral", "happy", "sad"),
    val_contents: int = 1,
    seconds: tuple[float, float] = (1.0, 1.6),
    seed: int = 0,
) -> Path:
    """Write the corpus under `root` and return its manifest. Every (person, content, emotion)
    triple exists, so every training clip can form a cross pair."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "blendshape").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    n = 0
    for person in range(persons):
        for content in range(contents + val_contents):
            split = "train" if content < contents else "val"
            for emotion in emotions:
                n += 1
                clip = f"p{person}-c{content}-{emotion}"
                f0 = EMOTION_F0.get(emotion, 120.0) * (1 + 0.15 * person)
                audio = voice(float(rng.uniform(*seconds)), f0, seed=seed * 1000 + n)
                sf.write(root / "audio" / f"{clip}.wav", audio, 16000)
                np.save(root / "blendshape" / f"{clip}.npy", target_curves(audio, emotion, n))
                entries.append(ManifestEntry(
                    clip_id=clip, audio=Path("audio", f"{clip}.wav"),
                    blendshapes=Path("blendshape", f"{clip}.npy"), split=split, emotion=emotion,
                    intensity=0, person=person, content_id=f"c{content}"))
    write_manifest(root / "manifest.jsonl", entries)
    return root / "manifest.jsonl"


def test_corpus_is_a_valid_manifest(tmp_path):
    manifest = make_corpus(tmp_path)
    entries = read_manifest(manifest)
    assert len(entries) == 2 * 3 * 3
    assert {e.split for e in entries} == {"train", "val"}
    for e in entries[:3]:
        curves = np.load(e.blendshapes)
        info = sf.info(str(e.audio))
        assert curves.shape == (num_frames(info.frames), 52)
