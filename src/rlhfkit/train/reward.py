"""Compatibility for `dpo/`, which still imports from here: reward-model training is `rlhfkit.reward.train`."""

from rlhfkit.reward.train import file_fingerprint, preference_loss  # noqa: F401
