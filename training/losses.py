"""EmoTalk's training losses, all masked so that padding never counts.

    total = w_cross * MSE(cross, T) + w_self * MSE(self, A)
          + w_velocity * (VEL(cross, T) + VEL(self, A)) / 2
          + w_emotion * CE(logits_B, emotion_B) + w_phone * CE(phone_logits_A, phones_A)
          + w_aperture * (MSE(aperture(cross), aperture(T)) + MSE(aperture(self), aperture(A))) / 2
          + w_contact * BCE(contact_logits_A, aperture(A) < 0.05)

MSE is over the valid frames of the batch (every frame weighs the same, so a long clip counts
more than a short one, as in the paper's per-frame objective); VEL is the MSE of frame
differences x[t+1] - x[t] over pairs of valid frames: it penalises jitter and lag that a
per-frame loss tolerates. CE ignores clips without a usable emotion label (IGNORE_LABEL); the
phone term (models with a phone head) is frame-level cross-entropy over frames with a phone.
The aperture term is the MSE of the mouth-opening score that the lip-closure metric ranks
(training/metrics.py): one direction of the 52 channels, which the plain MSE weighs no more
than any eye or brow channel although lip sync is judged on it.
The weights live in the config ([loss]); training/README.md says why they are what they are.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from emotalk_core.model.emotalk import TrainingOutputs

from .clips import IGNORE_LABEL
from .config import LossSection
from .metrics import aperture

PARTS = ("cross", "self", "velocity", "emotion", "phone", "aperture", "contact")
# A target frame's lips touch when its mouth aperture is below this (the closure rate's rule).
CONTACT_APERTURE = 0.05


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, frames) bool, True on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """pred, target (B, T, C); mean squared error over valid frames and all channels."""
    mask = frame_mask(lengths, pred.shape[1]).to(pred.dtype)[..., None]  # (B, T, 1)
    error = (pred - target).square() * mask
    return error.sum() / (mask.sum() * pred.shape[2]).clamp(min=1)


def velocity_loss(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor
                  ) -> torch.Tensor:
    """MSE of frame differences (B, T-1, C), over pairs of frames that are both valid."""
    if pred.shape[1] < 2:
        return pred.sum() * 0.0
    dp = pred[:, 1:] - pred[:, :-1]
    dt = target[:, 1:] - target[:, :-1]
    return masked_mse(dp, dt, (lengths - 1).clamp(min=0))


def emotion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over clips with a label; 0 (with a graph) when no clip has one."""
    valid = labels != IGNORE_LABEL
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_LABEL)


def aperture_loss(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor
                  ) -> torch.Tensor:
    """pred, target (B, T, 52) -> MSE of their aperture scores (B, T) over valid frames."""
    return masked_mse(aperture(pred)[..., None], aperture(target)[..., None], lengths)


def phone_loss(logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
    """logits (B, T, P), labels (B, T) with IGNORE_LABEL on unlabelled and padded frames ->
    mean cross-entropy over labelled frames; 0 without a phone head, labels or labelled
    frames."""
    if logits is None:
        return torch.zeros(())
    if labels is None or not bool((labels != IGNORE_LABEL).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                           ignore_index=IGNORE_LABEL)


def contact_loss(logits: torch.Tensor | None, target: torch.Tensor, lengths: torch.Tensor
                 ) -> torch.Tensor:
    """logits (B, T) of the lip-contact head, target curves (B, T, 52) -> binary cross-entropy
    over valid frames against "the target's lips touch" (aperture below CONTACT_APERTURE); 0
    without the head."""
    if logits is None:
        return torch.zeros((), device=target.device)
    touch = (aperture(target) < CONTACT_APERTURE).float()  # (B, T)
    mask = frame_mask(lengths, logits.shape[1]).float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), touch, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1)


def training_loss(out: TrainingOutputs, batch: dict[str, Any], w: LossSection
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and its (unweighted) parts, each a scalar tensor. Predictions are
    taken in float32 whatever the autocast precision, so the loss is not rounded to bf16."""
    cross, self_ = out.cross.float(), out.self_.float()
    parts = {
        "cross": masked_mse(cross, batch["target_cross"], batch["cross_frames"]),
        "self": masked_mse(self_, batch["target_self"], batch["self_frames"]),
        "velocity": 0.5 * (velocity_loss(cross, batch["target_cross"], batch["cross_frames"])
                           + velocity_loss(self_, batch["target_self"], batch["self_frames"])),
        "emotion": emotion_loss(out.emotion_logits, batch["emotion"]),
        "phone": phone_loss(out.phone_logits, batch.get("phones_self")).to(cross.device),
        "aperture": 0.5 * (aperture_loss(cross, batch["target_cross"], batch["cross_frames"])
                           + aperture_loss(self_, batch["target_self"], batch["self_frames"])),
        "contact": contact_loss(out.contact_logits, batch["target_self"], batch["self_frames"]),
    }
    total = (w.cross * parts["cross"] + w.self * parts["self"] + w.velocity * parts["velocity"]
             + w.emotion * parts["emotion"] + w.phone * parts["phone"]
             + w.aperture * parts["aperture"] + w.contact * parts["contact"])
    return total, parts
