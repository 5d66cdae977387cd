"""The environment step of a tool-using episode: the model calls a tool, the environment answers, the model goes on.

`run_episodes` plays a batch of episodes turn by turn, up to `max_tool_turns` tool calls each:

1. sample one assistant turn for every episode still running (the generation engine, from the episode's
   prompt and everything it has so far, stopping at end of turn);
2. the environment step (`step`): a turn whose last line is a tool call (`data.tool_calls.parse_tool_call`)
   that ended at end of turn, with tool turns left, is run (`world.tools.run_tool`: a bad call gets an error
   as its output); its result is appended as a `tool` turn *as token ids* (the template's rendering of the tool
   turn and the next assistant header, `tool_turn_ids`), and the episode goes on to the next turn. Any other
   turn (an answer, a turn cut at the length cap, a call with no tool turn left) ends the episode.

The ids are never decoded and re-encoded between turns: the episode the trainer sees is token for token what
was sampled plus what the environment appended, so the log-probs measured on it are exactly those of the
sampled tokens. `Episode.sampled` marks which response tokens the policy wrote (1) and which the environment
did (0): the loss, the KL and the advantages count only the former (`Rollout.mask`).

The reward reads the final turn's text (`Episode.text`); the calls and results before it are in `turns`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rlhfkit.data.tool_calls import ToolCall, call_text, parse_tool_call
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import Completion, SamplingParams
from rlhfkit.world.tools import run_tool

Tools = dict[str, Callable[[dict], str]]
# (prompt ids of every running episode, sampling params) -> one completion each
SampleFn = Callable[[list[list[int]], SamplingParams], list[Completion]]


@dataclass
class Episode:
    response: list[int] = field(default_factory=list)  # every token after the prompt, model's and tools'
    sampled: list[int] = field(default_factory=list)  # 1 where the policy sampled the token, 0 for tool turns
    text: str = ""  # the final assistant turn (what the reward reads)
    finished: bool = False  # the final turn ended at end of turn
    turns: list[dict] = field(default_factory=list)  # the tool calls and results before the final turn

    @property
    def tool_calls(self) -> int:
        return sum(m["role"] == "tool" for m in self.turns)


def tool_turn_ids(tokenizer, result: str) -> list[int]:
    """The ids the template puts after an assistant turn's end-of-turn token for a tool turn holding `result`,
    up to and including the next assistant turn's header (`<|tool|>result<|end|><|assistant|>`)."""
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    before = tokenizer.apply_chat_template(chat, tokenize=False)
    after = tokenizer.apply_chat_template(
        [*chat, {"role": "tool", "content": result}], tokenize=False, add_generation_prompt=True
    )
    if not after.startswith(before):
        raise RlhfkitError(
            "the chat template renders a tool turn by changing the turns before it; cannot append it"
        )
    return tokenizer(after[len(before) :], add_special_tokens=False)["input_ids"]


def step(
    episode: Episode, completion: Completion, tokenizer, tools: Tools, calls_left: int, room: int
) -> bool:
    """Append one sampled turn to `episode` and run its tool call if it makes one; True if the episode goes on.
    `room`: the tokens the context has left after this turn for a tool turn (and the next turn's cap)."""
    episode.response += completion.token_ids
    episode.sampled += [1] * len(completion.token_ids)
    text = completion.text or ""
    call = parse_tool_call(text) if completion.finish_reason == "stop" and calls_left > 0 else None
    appended: list[int] = []
    if call is not None:
        result = run_tool(call, tools)
        appended = tool_turn_ids(tokenizer, result)
    if call is None or len(appended) > room:  # an answer, a cut turn, or a call with no turn or room left
        episode.text, episode.finished = text, completion.finish_reason == "stop"
        return False
    episode.response += appended
    episode.sampled += [0] * len(appended)
    written = call_text(call) if isinstance(call, ToolCall) else call.text
    episode.turns += [
        {"role": "assistant", "content": text, "call": written},
        {"role": "tool", "content": result},
    ]
    return True


def run_episodes(
    sample: SampleFn,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    tools: Tools,
    max_tool_turns: int,
    max_length: int,
) -> list[Episode]:
    """Play every episode to its end. `max_length`: the model's position limit; a call whose tool turn and a
    next turn of `params.max_new_tokens` would not fit is not run, and the episode ends with it. Every episode
    therefore ends with a token the policy sampled."""
    episodes = [Episode() for _ in prompt_ids]
    running = list(range(len(prompt_ids)))
    for turn in range(max_tool_turns + 1):
        # each turn its own seed: the same params twice would replay the first turn's random numbers
        seed = None if params.seed is None else (params.seed * 1_000_003 + turn) % 2**62
        contexts = [list(prompt_ids[i]) + episodes[i].response for i in running]
        completions = sample(contexts, replace(params, seed=seed))
        going = []
        for i, completion in zip(running, completions):
            used = len(prompt_ids[i]) + len(episodes[i].response) + len(completion.token_ids)
            room = max_length - used - params.max_new_tokens
            if step(episodes[i], completion, tokenizer, tools, max_tool_turns - turn, room):
                going.append(i)
        running = going
        if not running:
            break
    return episodes
