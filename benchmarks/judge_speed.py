"""How fast the demo world's gold judge scores responses (PPO and evaluation call it on every sample).

Scores 40 good responses per task kind (with their meta), after one warm-up call that builds the world
vocabulary. Was a test assertion (> 2,000 responses/s); a timing belongs here, not in the test suite.

Usage: python benchmarks/judge_speed.py [--per-kind 40] [--repeats 3]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time


def main() -> None:
    from rlhfkit.world import judge_score
    from rlhfkit.world.answers import good_response
    from rlhfkit.world.tasks import KINDS, sample_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    items = []
    for kind in KINDS:
        for _ in range(args.per_kind):
            task = sample_task(kind, rng)
            items.append(([{"role": "user", "content": task.question}], good_response(task, rng), task.meta))
    judge_score(*items[0])  # builds the vocabulary once
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for messages, response, meta in items:
            judge_score(messages, response, meta)
        rates.append(len(items) / (time.perf_counter() - start))
    print(json.dumps({"responses": len(items), "responses_per_s": [round(r) for r in rates],
                      "cpu": platform.processor() or platform.machine()}))  # fmt: skip


if __name__ == "__main__":
    main()
