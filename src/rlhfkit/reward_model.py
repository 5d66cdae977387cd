"""Compatibility for `dpo/` and `rs/`, which still import from here: the reward model is `rlhfkit.reward.model`."""

from rlhfkit.reward.model import default_max_length, load_reward_model, score_conversations  # noqa: F401
