"""Emotion presets: one prototype of emotion features per category, stored with the model.

A prototype is the mean over frames and clips of the emotion encoder's features for the training
clips labelled with that emotion. At inference `EmotionControl(source="preset")` blends a clip's
own emotion features towards it.
"""

from __future__ import annotations

import os
from collections import defaultdict

import torch
from tqdm import tqdm

from .checkpoint import load_model, resolve_model_dir, save_model
from .controls import PRESET_NAMES
from .errors import ControlError
from .inference import Predictor
from .manifest import entries_by_split, read_manifest


def compute_presets(
    model: str | os.PathLike, manifest: str | os.PathLike, split: str = "train",
    device: str = "auto",
) -> list[str]:
    """Compute the prototypes from the labelled clips of `split` and store them in the model
    folder (replacing earlier ones). Returns the preset names in stored order."""
    directory = resolve_model_dir(model)
    entries = [e for e in entries_by_split(read_manifest(manifest)).get(split, []) if e.emotion]
    if not entries:
        raise ControlError(f"{manifest} has no emotion-labelled clips in split {split!r}")
    predictor = Predictor(directory, device=device)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = defaultdict(int)
    for entry in tqdm(entries, desc="emotion presets", disable=None):
        embedding = predictor.emotion_embedding(entry.audio).float().cpu()
        sums[entry.emotion] = sums.get(entry.emotion, 0) + embedding
        counts[entry.emotion] += 1
    names = [n for n in PRESET_NAMES if n in sums] + sorted(set(sums) - set(PRESET_NAMES))
    presets = {n: sums[n] / counts[n] for n in names}
    loaded = load_model(directory)
    save_model(directory, loaded.model, presets, loaded.metadata)
    return names
