"""Generation engine: greedy equals transformers, log-probs equal a forward pass, stops, seeds, sampling."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import SamplingParams, generate, lean_llama
from rlhfkit.generation.sampling import pick_next_tokens

VOCAB = 300
PAD = 0


def llama(kv_heads: int = 4, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.2,  # livelier than the default 0.02: greedy outputs vary instead of repeating
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    return model


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = None
    return model


def prompts(lengths=(5, 9, 3, 12, 7, 1), seed: int = 1) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def left_padded(prompt_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of the prompts, left-padded with PAD to the longest."""
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompt_ids), width), PAD)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompt_ids):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids, mask


def hf_generate(model, prompt_ids, max_new_tokens, eos_token_id=None) -> list[list[int]]:
    """transformers' greedy generate on the same prompts, left-padded; new tokens up to eos (inclusive).

    `eos_token_id`: None (generate exactly `max_new_tokens`) or a list of stop ids."""
    ids, mask = left_padded(prompt_ids)
    width = ids.size(1)
    kwargs = {"min_new_tokens": max_new_tokens} if eos_token_id is None else {"eos_token_id": eos_token_id}
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=PAD,
            **kwargs,
        )[:, width:].tolist()
    if eos_token_id is not None:
        out = [_through_first_stop(row, set(eos_token_id)) for row in out]
    return out


def _through_first_stop(row: list[int], stops: set[int]) -> list[int]:
    for i, token in enumerate(row):
        if token in stops:
            return row[: i + 1]
    return row


GREEDY = SamplingParams(max_new_tokens=24, temperature=0)


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("backend", ["lean", "hf"])
def test_greedy_equals_transformers_generate(backend, kv_heads):
    model = llama(kv_heads)
    batch = prompts()
    expected = hf_generate(model, batch, GREEDY.max_new_tokens)
    got = generate(model, batch, GREEDY, pad_token_id=PAD, backend=backend)
    assert [c.token_ids for c in got] == expected
    assert all(c.finish_reason == "length" for c in got)
    assert len({tuple(row) for row in expected}) > 1  # the check is not vacuous


def test_greedy_equals_transformers_across_chunks():
    model = llama()
    batch = prompts(lengths=(4, 11, 2, 8, 6, 3, 9))
    expected = hf_generate(model, batch, 10)
    # Chunks of 3 sort by length; each chunk pads differently from transformers' single batch.
    got = generate(
        model, batch, SamplingParams(max_new_tokens=10, temperature=0), pad_token_id=PAD, batch_size=3
    )
    assert [c.token_ids for c in got] == expected


def test_packed_weights_are_reused_only_for_a_frozen_model():
    model = llama().requires_grad_(False)
    batch = prompts()
    first = generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")
    packed = lean_llama._PACKED[model]
    assert [c.token_ids for c in generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")] == [
        c.token_ids for c in first
    ]
    assert lean_llama._PACKED[model] is packed  # same frozen model, same weights: no repacking
    # load_state_dict copies into the same tensors (new versions): the next call repacks.
    model.load_state_dict(llama(seed=1).state_dict())
    got = generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")
    assert lean_llama._PACKED[model] is not packed
    assert [c.token_ids for c in got] == hf_generate(model, batch, GREEDY.max_new_tokens)


def test_a_model_in_training_is_decoded_with_its_current_weights():
    # The fused AdamW kernel (the training loop's) updates parameters in place without bumping their version:
    # a packed copy kept across calls would decode PPO's policy with the weights of its first rollout.
    model = llama()
    batch = prompts()
    first = generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model(input_ids=torch.tensor([batch[0]]), labels=torch.tensor([batch[0]])).loss.backward()
    optimizer.step()
    got = generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")
    assert model not in lean_llama._PACKED
    assert [c.token_ids for c in got] == hf_generate(model, batch, GREEDY.max_new_tokens)
    assert [c.token_ids for c in got] != [c.token_ids for c in first]


def test_bf16_lean_matches_transformers_logprobs():
    # bf16 weights take oneDNN's packed path where the CPU has native bf16, F.linear elsewhere; either way
    # the lean decoder's log-probs stay within bf16 rounding of the model's own forward.
    model = llama().to(torch.bfloat16)
    batch = prompts()
    got = generate(
        model, batch, SamplingParams(max_new_tokens=8, temperature=0), pad_token_id=PAD, backend="lean"
    )
    for p, c in zip(batch, got):
        ids = torch.tensor([p + c.token_ids[:-1]])
        with torch.inference_mode():
            logp = model(input_ids=ids).logits[0, len(p) - 1 :].float().log_softmax(-1)
        ref = logp.gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(c.logprobs), ref, atol=0.15)


def test_fallback_handles_other_architectures():
    model = gpt2()
    assert not lean_llama.supports(model)
    batch = prompts()
    expected = hf_generate(model, batch, 12)
    got = generate(model, batch, SamplingParams(max_new_tokens=12, temperature=0), pad_token_id=PAD)
    assert [c.token_ids for c in got] == expected
    with pytest.raises(RlhfkitError, match="not a supported Llama"):
        generate(model, batch, GREEDY, pad_token_id=PAD, backend="lean")


@pytest.mark.parametrize("backend", ["lean", "hf"])
def test_stop_token_ends_rows_and_finished_rows_are_dropped(backend):
    model = llama()
    batch = prompts(lengths=(5, 9, 3, 12, 7, 1, 4, 6))
    free = hf_generate(model, batch, 30)
    # Tokens that rows 0-2 produce at different steps: rows end at different times, some never.
    stops = sorted({free[row][2 + 3 * row] for row in range(3)})
    expected = hf_generate(model, batch, 30, eos_token_id=stops)
    params = SamplingParams(max_new_tokens=30, temperature=0, stop_token_ids=stops)
    got = generate(model, batch, params, pad_token_id=PAD, backend=backend)
    assert [c.token_ids for c in got] == expected
    reasons = [c.finish_reason for c in got]
    assert reasons == ["stop" if row[-1] in stops else "length" for row in expected]
    assert "length" in reasons
    assert sum(r == "stop" for r in reasons) > len(batch) // 2  # enough rows end to trigger dropping rows
    assert len({len(row) for row in expected}) > 2


def full_forward_logprobs(model, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float() / temperature
    logprobs = torch.log_softmax(logits, -1)
    positions = range(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return [logprobs[pos, tok].item() for pos, tok in zip(positions, completion)]


@pytest.mark.parametrize("backend", ["lean", "hf"])
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=16, temperature=0),
        SamplingParams(max_new_tokens=16, temperature=0.7, top_k=20, top_p=0.9, seed=5),
        SamplingParams(max_new_tokens=16, temperature=1.3, seed=6),
    ],
)
def test_logprobs_equal_a_separate_forward_pass(backend, params):
    model = llama(kv_heads=2)
    batch = prompts()
    got = generate(model, batch, params, pad_token_id=PAD, backend=backend)
    temperature = params.temperature or 1.0
    for prompt, completion in zip(batch, got):
        assert len(completion.logprobs) == len(completion.token_ids) == 16
        expected = full_forward_logprobs(model, prompt, completion.token_ids, temperature)
        assert completion.logprobs == pytest.approx(expected, abs=1e-4)
        assert all(lp <= 0 for lp in completion.logprobs)


def test_same_seed_same_output_and_different_seed_differs():
    model = llama()
    batch = prompts()

    def run(seed, backend="lean"):
        params = SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.95, seed=seed)
        return [c.token_ids for c in generate(model, batch, params, pad_token_id=PAD, backend=backend)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1) == run(1, backend="hf")  # the draws do not depend on the decoder


def test_sampling_follows_the_distribution_and_truncation():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = pick_next_tokens(logits, SamplingParams(), gen)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.15, 0.05], abs=0.015)
    assert torch.allclose(logprobs.exp(), torch.tensor([0.5, 0.3, 0.15, 0.05])[tokens])

    tokens, _ = pick_next_tokens(logits, SamplingParams(top_k=2), gen)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert freq[2:].sum() == 0 and freq[0].item() == pytest.approx(0.5 / 0.8, abs=0.015)

    # top_p=0.7: 0.5 alone is below 0.7, so the nucleus is {0, 1}; 0.85 would add token 2.
    tokens, _ = pick_next_tokens(logits, SamplingParams(top_p=0.7), gen)
    assert set(tokens.tolist()) == {0, 1}
    tokens, _ = pick_next_tokens(logits, SamplingParams(top_p=0.85), gen)
    assert set(tokens.tolist()) == {0, 1, 2}

    # Temperature sharpens: at 0.25 token 0 dominates far beyond its 0.5.
    tokens, logprobs = pick_next_tokens(logits, SamplingParams(temperature=0.25), gen)
    assert (tokens == 0).float().mean() > 0.85
    tempered = torch.softmax(logits[0] / 0.25, -1)
    assert torch.allclose(logprobs.exp(), tempered[tokens])


def test_flat_distribution_nucleus_falls_back_to_a_full_sort():
    logits = torch.zeros(4, 1000)  # uniform: the nucleus of 0.9 is 900 tokens, beyond the first guess
    tokens, _ = pick_next_tokens(logits, SamplingParams(top_p=0.9), torch.Generator().manual_seed(0))
    assert tokens.shape == (4,) and bool((tokens < 1000).all())
    logits = torch.randn(2000, 200) * 0.01
    tokens, _ = pick_next_tokens(logits, SamplingParams(top_p=0.5), torch.Generator().manual_seed(0))
    ranks = (logits > logits.gather(1, tokens[:, None])).sum(-1)
    assert int(ranks.max()) < 110  # only (roughly) the upper half of the tokens is ever drawn


def test_top_k_one_is_greedy():
    model = llama()
    batch = prompts()
    greedy = generate(model, batch, GREEDY, pad_token_id=PAD)
    top1 = generate(model, batch, SamplingParams(max_new_tokens=24, top_k=1, seed=0), pad_token_id=PAD)
    assert [c.token_ids for c in top1] == [c.token_ids for c in greedy]


def test_bad_requests_raise_project_errors():
    model = llama()
    with pytest.raises(RlhfkitError, match="prompt 1"):
        generate(model, [[1, 2], []], GREEDY, pad_token_id=PAD)
    with pytest.raises(RlhfkitError, match="tokenizer"):
        generate(model, [[1, 2]], SamplingParams(stop_strings=("x",)), pad_token_id=PAD)
    with pytest.raises(RlhfkitError, match="backend"):
        generate(model, [[1, 2]], GREEDY, pad_token_id=PAD, backend="fast")
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"max_new_tokens": 0}):
        with pytest.raises(RlhfkitError):
            SamplingParams(**bad)
