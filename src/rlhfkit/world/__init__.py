"""The built-in demo world: a seeded universe of text in which a tiny model can be pretrained, taught by
demonstrations and improved by preferences, with a hidden gold judge that measures every result.

Python API: ``build_world(out_dir, seed=0, size="default")`` writes the files and returns ``world.json``'s
content; ``judge_score(messages, response, meta=None)`` is the gold judge; ``label_candidates(records, ...)``
ranks candidate responses with simulated annotators. See docs/world.md.
"""

from __future__ import annotations

from rlhfkit.world.annotators import label_candidates, measure_agreement
from rlhfkit.world.build import build_world
from rlhfkit.world.judge import Score
from rlhfkit.world.judge import score as judge_score

__all__ = ["Score", "build_world", "judge_score", "label_candidates", "measure_agreement"]
