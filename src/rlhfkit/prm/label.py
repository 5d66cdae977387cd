"""`rlhfkit prm label`: play tool-using episodes with a policy and label every step from the task's solution.

For each verifiable prompt (a record with `meta.steps` and an answer, as `world build --verifiable` writes),
the policy plays `samples` episodes with the world's tools (`evaluate.tool_episodes.play_episodes`, the
environment PPO, RLOO and GRPO train in), at `temperature` so that right and wrong steps both occur. Each
episode becomes one line of the output:

    {"id", "prompt": [messages], "turns": [{"role": "assistant", "content", "call"}, {"role": "tool",
     "content"}, ...], "final": "the last turn's text", "labels": [1, 0, ...], "correct": true, "kind"}

`labels` has one 1/0 per tool call (`prm.steps.step_labels`); `correct` is the verifier's verdict on the final
turn (kept for analysis: the PRM is not trained on it). Episodes are written in chunks of `chunk` prompts, so
an interrupted run continues after its last whole chunk when run again with the same settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.config import require, require_at_least
from rlhfkit.errors import RlhfkitError


@dataclass
class PRMLabelConfig:
    policy: str = ""  # the model that plays the episodes (a tool-trained SFT checkpoint)
    prompts: str = ""  # verifiable prompts with `meta.steps` and an answer (world build --verifiable)
    out: str = "runs/prm/steps.jsonl"  # one episode per line, with a label per step
    samples: int = 2  # episodes per prompt
    temperature: float = 1.0  # sampling temperature: wrong steps must occur for the PRM to learn from
    max_tool_turns: int = 6  # tool calls an episode may make
    max_new_tokens: int = 96  # tokens per turn
    max_prompts: int = 0  # use the first N prompts; 0: all
    chunk: int = 256  # prompts per written chunk (the unit of resuming)
    batch_size: int = 128  # sequences decoded together
    seed: int = 0
    device: str = "auto"


def _tasks(path: str, limit: int) -> list[dict]:
    from rlhfkit.data.chats import load_prompts
    from rlhfkit.verifier import answer_of

    records = load_prompts(path)
    records = records[:limit] if limit else records
    for line, record in enumerate(records, 1):
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        if not isinstance(meta.get("steps"), list) or answer_of(record, path, line) is None:
            field = "meta.steps" if not isinstance(meta.get("steps"), list) else "meta.answer"
            raise RlhfkitError.at(
                path,
                line,
                field,
                "prm label needs verifiable tasks with their solution steps and answer "
                "(rlhfkit world build --verifiable N)",
            )
    return records


def run(cfg: PRMLabelConfig) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rlhfkit.data.tool_calls import require_tool_template
    from rlhfkit.evaluate.tool_episodes import play_episodes
    from rlhfkit.generation import SamplingParams
    from rlhfkit.generation.loading import load_for_generation
    from rlhfkit.prm.steps import step_labels
    from rlhfkit.verifier import answer_of, verify

    require(cfg, policy="the model that plays the episodes", prompts="verifiable prompts")
    require_at_least(cfg, 1, "samples", "max_tool_turns", "max_new_tokens", "chunk", "batch_size")
    if cfg.temperature <= 0:
        raise RlhfkitError(f"--temperature: expected a number > 0, got {cfg.temperature}")
    records = _tasks(cfg.prompts, cfg.max_prompts)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_lines = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
    if len(done_lines) == len(records) * cfg.samples:  # finished (its last chunk may be a short one)
        return out
    per_chunk = cfg.chunk * cfg.samples
    start = len(done_lines) // per_chunk * cfg.chunk  # whole chunks only: a torn chunk is played again
    with out.open("w", encoding="utf-8") as fh:
        fh.writelines(line + "\n" for line in done_lines[: start * cfg.samples])
    if start >= len(records):
        return out
    model, tokenizer = load_for_generation(cfg.policy, device=cfg.device)
    require_tool_template(tokenizer, cfg.policy)
    with Progress(
        TextColumn("prm label"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeRemainingColumn(),
    ) as progress:
        bar = progress.add_task("label", total=len(records) * cfg.samples, completed=start * cfg.samples)
        for first in range(start, len(records), cfg.chunk):
            chunk = records[first : first + cfg.chunk]
            chats = [r["messages"] for r in chunk for _ in range(cfg.samples)]
            params = SamplingParams(
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                seed=cfg.seed * 100_003 + first,
            )
            episodes = play_episodes(model, tokenizer, chats, params, cfg.max_tool_turns, cfg.batch_size)
            with out.open("a", encoding="utf-8") as fh:
                for i, episode in enumerate(episodes):
                    record = chunk[i // cfg.samples]
                    answer = answer_of(record)
                    turns = episode.meta["turns"]
                    row = {
                        "id": f"{record.get('id', first + i // cfg.samples)}:{i % cfg.samples}",
                        "prompt": record["messages"],
                        "turns": turns,
                        "final": episode.text,
                        "labels": step_labels(record["meta"]["steps"], answer.value, turns),
                        "correct": verify(episode.text, answer).correct,
                        "kind": record.get("kind") or record["meta"].get("kind"),
                    }
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            progress.update(bar, advance=len(episodes))
    return out
