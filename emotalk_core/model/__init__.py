"""The EmoTalk network (tensors in, tensors out)."""

from .emotalk import EmoTalk, TrainingOutputs, frame_counts, level_weights, one_hot_weights

__all__ = ["EmoTalk", "TrainingOutputs", "frame_counts", "level_weights", "one_hot_weights"]
