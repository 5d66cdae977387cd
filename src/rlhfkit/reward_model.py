"""Compatibility for `dpo/`, `rs/` and benchmarks/frontier.py, which still import from here: see `rlhfkit.reward.model`."""

from rlhfkit.reward.model import default_max_length, load_reward_model, score_conversations  # noqa: F401
