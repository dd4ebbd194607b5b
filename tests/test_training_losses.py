"""Losses: zero on perfect predictions, blind to padding, weighted as configured."""

from __future__ import annotations

import pytest
import torch

from emotalk_core.model.emotalk import TrainingOutputs
from training import losses as L
from training.clips import IGNORE_LABEL
from training.config import LossSection


def _padded(lengths: list[int], frames: int, seed: int = 0) -> torch.Tensor:
    """(B, frames, 52) random values with garbage (not zeros) in the padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(lengths), frames, 52, generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 100.0 + seed
    return x


def test_zero_on_perfect_predictions():
    lengths = torch.tensor([7, 4])
    target = _padded([7, 4], 7)
    assert L.masked_mse(target, target, lengths) == 0
    assert L.velocity_loss(target, target, lengths) == 0
    logits = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert L.emotion_loss(logits, torch.tensor([0, 1])) < 1e-6


def test_padding_is_ignored():
    lengths = torch.tensor([7, 4])
    target = _padded([7, 4], 7, seed=0)
    pred = target.clone()
    pred[1, 4:] = -55.0  # different garbage in the padding
    assert L.masked_mse(pred, target, lengths) == 0
    assert L.velocity_loss(pred, target, lengths) == 0  # the 3->4 step is not a valid pair
    pred[1, 3, 0] += 1.0  # last valid frame: counts
    assert L.masked_mse(pred, target, lengths) == pytest.approx(1.0 / (11 * 52))


def test_mean_is_over_valid_frames_and_channels():
    lengths = torch.tensor([2, 1])
    target = torch.zeros(2, 3, 52)
    pred = torch.zeros(2, 3, 52)
    pred[0, :2] = 1.0
    pred[1, 0] = 1.0
    pred[1, 2] = 9.0  # padding
    assert L.masked_mse(pred, target, lengths) == pytest.approx(1.0)
    assert L.velocity_loss(pred, target, lengths) == pytest.approx(0.0)


def test_velocity_sees_jitter_that_mse_forgives():
    lengths = torch.tensor([6])
    target = torch.zeros(1, 6, 52)
    smooth = torch.full((1, 6, 52), 0.1)
    jitter = torch.tensor([0.1, -0.1] * 3)[None, :, None].expand(1, 6, 52)
    assert L.masked_mse(smooth, target, lengths) == L.masked_mse(jitter, target, lengths)
    assert L.velocity_loss(smooth, target, lengths) == 0
    assert L.velocity_loss(jitter, target, lengths) == pytest.approx(0.04)


def test_emotion_loss_ignores_unlabelled_clips():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]], requires_grad=True)
    both = L.emotion_loss(logits, torch.tensor([0, IGNORE_LABEL]))
    assert both.item() == pytest.approx(L.emotion_loss(logits[:1], torch.tensor([0])).item())
    none = L.emotion_loss(logits, torch.tensor([IGNORE_LABEL, IGNORE_LABEL]))
    assert none == 0
    none.backward()  # still part of the graph: DDP and the total loss need no special case
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_training_loss_weights_the_parts():
    lengths = torch.tensor([5, 3])
    target = _padded([5, 3], 5)
    cross = target + 0.1 * torch.ones_like(target)
    self_ = target.clone()
    logits = torch.zeros(2, 3)
    batch = {"target_cross": target, "cross_frames": lengths, "target_self": target,
             "self_frames": lengths, "emotion": torch.tensor([1, 2])}
    out = TrainingOutputs(cross, self_, logits)
    weights = LossSection(cross=2.0, self=1.0, velocity=0.5, emotion=0.1)
    total, parts = L.training_loss(out, batch, weights)
    assert parts["cross"] == pytest.approx(0.01)
    assert parts["self"] == 0 and parts["velocity"] == pytest.approx(0.0, abs=1e-12)
    assert parts["emotion"] == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert total == pytest.approx(2 * 0.01 + 0.1 * parts["emotion"].item())
    perfect = TrainingOutputs(target, target, torch.tensor([[0.0, 50.0, 0.0], [0, 0, 50.0]]))
    total, _ = L.training_loss(perfect, batch, weights)
    assert total < 1e-12
    assert parts["phone"] == 0  # no phone head
    with_phones = TrainingOutputs(cross, self_, logits, torch.zeros(2, 5, 4))
    batch["phones_self"] = torch.tensor([[0, 1, 2, 3, 0], [1, 1, 1, IGNORE_LABEL, IGNORE_LABEL]])
    total, parts = L.training_loss(with_phones, batch, LossSection(
        cross=2.0, self=1.0, velocity=0.5, emotion=0.1, phone=0.5))
    assert parts["phone"] == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert total == pytest.approx(2 * 0.01 + 0.1 * parts["emotion"].item()
                                  + 0.5 * parts["phone"].item())


def test_phone_loss_counts_labelled_frames_only():
    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 2] = logits[0, 1, 1] = logits[1, 0, 3] = 30.0  # confident and right
    logits[1, 2, 0] = 30.0  # confident and wrong, but that frame has no label
    labels = torch.tensor([[2, 1, IGNORE_LABEL], [3, IGNORE_LABEL, IGNORE_LABEL]])
    assert L.phone_loss(logits, labels) < 1e-6
    labels[1, 2] = 1
    assert L.phone_loss(logits, labels) == pytest.approx(30.0 / 4, rel=1e-3)  # 1 wrong of 4
    assert L.phone_loss(logits, torch.full((2, 3), IGNORE_LABEL)) == 0
    assert L.phone_loss(None, labels) == 0 and L.phone_loss(logits, None) == 0


def test_aperture_loss_sees_a_missed_closure_at_full_weight():
    from emotalk_core.arkit import INDEX

    lengths = torch.tensor([6, 4])
    target = _padded([6, 4], 6)
    open_mouth = target.clone()
    open_mouth[:, :, INDEX["mouthClose"]] -= 0.2  # lips fail to close by 0.2 everywhere
    assert L.aperture_loss(target, target, lengths) == 0
    assert L.aperture_loss(open_mouth, target, lengths) == pytest.approx(0.04, rel=1e-4)
    assert L.masked_mse(open_mouth, target, lengths) == pytest.approx(0.04 / 52, rel=1e-4)
    smile = target.clone()
    smile[:, :, INDEX["mouthSmileLeft"]] += 0.2  # not an aperture channel
    assert L.aperture_loss(smile, target, lengths) < 1e-10
