"""Inference on real architectures: sources (folder, .gguf, adapter, Hub name), stopping, engines, serve, errors.

Tiny random checkpoints of four families (tests/arch_models.py) are built once per module: Llama (tied, GQA),
Qwen2 (two eos ids), Gemma-2 (soft-capping; turns end with the non-eos `<end_of_turn>`) and GPT-NeoX (no chat
template). "Forcing" a token means pointing its LM-head row along the hidden state at a chosen step, so the
model emits it there (or earlier) and a test can check that generation stops on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from arch_models import ARCHS, build_tiny
from gguf_writer import write_gguf
from rlhfkit.cli import main
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import RlhfkitError
from rlhfkit.generation import SamplingParams, end_of_turn_ids, generate, generate_chat, lean_llama, pad_id
from rlhfkit.generation.loading import load_for_generation
from rlhfkit.generation.turns import render_chat
from rlhfkit.models import load_causal_lm
from rlhfkit.tokenizer import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAT = [{"role": "user", "content": "What does the cat see?"}]
# For GPT-NeoX, which ships no template: turns close with its eos, so a reply ends at eos.
NEOX_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_file) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch")
    return {arch: build_tiny(arch, corpus_file, root / arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def neox_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "neox.jinja"
    path.write_text(NEOX_TEMPLATE)
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    write_jsonl(path, [{"id": f"p{i}", "messages": [{"role": "user", "content": q}]} for i, q in
                       enumerate(["What does the cat see?", "Where is the baker?", "Tell me about bread."])])  # fmt: skip
    return path


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A LoRA adapter on the tiny Llama (non-zero, so it changes the outputs), saved the way peft saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny["llama"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config).eval()
    out = tmp_path_factory.mktemp("adapter") / "lora"
    peft_model.save_pretrained(out)
    return out, peft_model


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ids(tokenizer, messages=CHAT) -> list[int]:
    return tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]


def force_token(model, tokenizer, token_id: int, step: int = 3) -> list[int]:
    """Make greedy decoding of CHAT emit `token_id` at `step` (or before): returns the unforced greedy tokens.

    The token's LM-head row is set along the final hidden state that predicts step `step`, so its logit there
    is far above every other (the LM head must be untied, so the prompt's embeddings do not change)."""
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    prompt = _ids(tokenizer)
    params = SamplingParams(max_new_tokens=step, temperature=0)
    greedy = generate(model, [prompt], params, pad_token_id=pad_id(tokenizer), backend="hf")[0].token_ids
    seen = {}
    hook = model.lm_head.register_forward_hook(lambda module, args, out: seen.setdefault("h", args[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([prompt + greedy]))
        hook.remove()
        hidden = seen["h"][0, -1]
        model.lm_head.weight[token_id] = 40 * hidden / hidden.norm() ** 2  # logit 40 at that step
    return greedy


def _untied_gemma(tiny, out: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny["gemma2"], attn_implementation="eager")
    model.config.tie_word_embeddings = False
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.lm_head = head
    return model.eval()


# ------------------------------------------------------------------------------------------ stop ids and templates


def test_end_of_turn_comes_from_each_template_and_generation_config(tiny):
    names = {}
    for arch in ("llama", "qwen2", "gemma2"):
        model, tok = load_for_generation(tiny[arch])
        names[arch] = tok.convert_ids_to_tokens(list(end_of_turn_ids(tok, model)))
    assert names["llama"] == ["<|im_end|>"]
    assert names["qwen2"] == ["<|im_end|>", "<|endoftext|>"]  # generation_config lists a second eos
    assert names["gemma2"] == ["<end_of_turn>", "<eos>"]  # the turn's end is not the eos
    # Llama 3's and rlhfkit's formats: the template's closing special token, whatever it is called.
    tok = load_tokenizer(tiny["llama"])
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|eot_id|>"]})
    tok.chat_template = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    assert tok.convert_ids_to_tokens(list(end_of_turn_ids(tok)))[0] == "<|eot_id|>"
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    assert tok.convert_ids_to_tokens(list(end_of_turn_ids(tok)))[0] == "<|end|>"


def test_generation_stops_on_gemmas_non_eos_end_of_turn(tiny, tmp_path, prompts, capsys):
    model = _untied_gemma(tiny, tmp_path)
    tok = load_tokenizer(tiny["gemma2"])
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    assert eot != tok.eos_token_id
    greedy = force_token(model, tok, eot)
    out = generate_chat(model, tok, [CHAT], SamplingParams(max_new_tokens=24, temperature=0))[0]
    assert out.finish_reason == "stop" and out.token_ids[-1] == eot and len(out.token_ids) <= len(greedy) + 1
    assert (
        out.token_ids[:-1] == greedy[: len(out.token_ids) - 1]
    )  # it decoded normally until the forced token
    # The same through the CLI, from the saved checkpoint.
    model.save_pretrained(tmp_path / "gemma")
    tok.save_pretrained(tmp_path / "gemma")
    code, _, _ = _cli(capsys, "generate", "--model", tmp_path / "gemma", "--prompts", prompts, "--out",
                      tmp_path / "c.jsonl", "--temperature", "0", "--max-new-tokens", "24")  # fmt: skip
    first = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert code == 0 and first["meta"]["generation"]["finish_reasons"] == ["stop"]
    assert first["completions"][0][0]["content"] == tok.decode(out.token_ids[:-1], skip_special_tokens=True)


def test_qwen2_stops_on_its_second_eos_id(tiny):
    model, tok = load_for_generation(tiny["qwen2"])
    second = tok.convert_tokens_to_ids("<|endoftext|>")
    assert second != tok.eos_token_id and second not in end_of_turn_ids(tok)  # only the model's config has it
    greedy = force_token(model, tok, second)
    out = generate_chat(model, tok, [CHAT], SamplingParams(max_new_tokens=24, temperature=0))[0]
    assert out.finish_reason == "stop" and out.token_ids[-1] == second
    assert out.token_ids[:-1] == greedy[: len(out.token_ids) - 1]


# ------------------------------------------------------------------------------------------------ the engines


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lean_engine_equals_hf_on_llama_layouts(tiny, arch):
    from rlhfkit.generation.hf_decoder import HFDecoder

    model, tok = load_for_generation(tiny[arch])
    assert lean_llama.supports(model)
    prompts = [_ids(tok), _ids(tok, [{"role": "user", "content": "Where is the baker at the market?"}])]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        lean, hf = lean_llama.LeanLlama(model, 2), HFDecoder(model)
        assert torch.allclose(lean.prefill(ids, mask, 8), hf.prefill(ids, mask, 8), atol=1e-5)
        step = torch.tensor([5, 7])
        assert torch.allclose(lean.step(step), hf.step(step), atol=1e-5)
    params = SamplingParams(max_new_tokens=16, temperature=0)
    pad = pad_id(tok)
    lean_out = generate(model, prompts, params, pad_token_id=pad, backend="lean")
    hf_out = generate(model, prompts, params, pad_token_id=pad, backend="hf")
    assert [c.token_ids for c in lean_out] == [c.token_ids for c in hf_out]


ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
}  # fmt: skip


@pytest.mark.parametrize("scaling", [*ROPE_SCALINGS, "dynamic"])
def test_lean_engine_reproduces_rope_scaling_or_refuses_it(tiny, scaling):
    """Static RoPE scalings (cos/sin come from the model's own rotary module) are exact; dynamic is refused."""
    from transformers import AutoConfig, LlamaForCausalLM

    from rlhfkit.generation.hf_decoder import HFDecoder

    config = AutoConfig.from_pretrained(tiny["llama"])
    extra = ROPE_SCALINGS.get(scaling, {"rope_type": "dynamic", "factor": 2.0})
    config.rope_parameters = {"rope_theta": 10000.0, **extra}
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict(load_causal_lm(tiny["llama"]).state_dict())
    if scaling == "dynamic":
        assert "depends on the sequence length" in lean_llama.unsupported_reason(model)
        return
    assert lean_llama.supports(model)
    ids = torch.tensor([_ids(load_tokenizer(tiny["llama"]))])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        lean, hf = lean_llama.LeanLlama(model, 1), HFDecoder(model)
        assert torch.allclose(lean.prefill(ids, mask, 4), hf.prefill(ids, mask, 4), atol=1e-5)
        assert torch.allclose(lean.step(torch.tensor([7])), hf.step(torch.tensor([7])), atol=1e-5)


def test_other_models_fall_back_with_one_notice(tiny, capsys):
    for arch in ("gemma2", "gpt_neox"):
        model, tok = load_for_generation(tiny[arch], need_chat_template=False)
        assert not lean_llama.supports(model)
        capsys.readouterr()
        for _ in range(2):  # two calls, two chunks each: one notice
            generate(model, [[1, 2, 3]] * 3, SamplingParams(max_new_tokens=2), pad_token_id=0, batch_size=2)
        err = capsys.readouterr().err
        assert err.count("general Hugging Face decoder") == 1 and "not a Llama-layout model" in err
    llama, _ = load_for_generation(tiny["llama"], dtype="float16")
    assert llama.dtype == torch.float16 and "float16" in lean_llama.unsupported_reason(llama)
    assert lean_llama.supports(load_for_generation(tiny["llama"], dtype="bfloat16")[0])
    softcapped, _ = load_for_generation(tiny["llama"])
    softcapped.config.final_logit_softcapping = 30.0
    assert lean_llama.unsupported_reason(softcapped) == "logit soft-capping"


# --------------------------------------------------------------------------------------- generate and serve


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_cli_runs_each_architecture(tiny, arch, prompts, neox_template, tmp_path, capsys):
    extra = ["--chat-template", neox_template] if arch == "gpt_neox" else []
    code, out, err = _cli(capsys, "generate", "--model", tiny[arch], "--prompts", prompts, "--out",
                          tmp_path / "c.jsonl", "--n", "2", "--max-new-tokens", "6", *extra)  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["completions"]) == 2 for r in records)
    assert all(isinstance(c[0]["content"], str) for r in records for c in r["completions"])


def test_serve_four_architectures_and_an_adapter_side_by_side(tiny, adapter, neox_template):
    from fastapi.testclient import TestClient

    from rlhfkit.serve import create_app, load_served_models

    specs = [f"{arch}={path}" for arch, path in tiny.items()] + [f"rlhf={adapter[0]}"]
    models = load_served_models(specs, chat_templates=[f"gpt_neox={neox_template}"])
    try:
        client = TestClient(create_app(models))
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [*ARCHS, "rlhf"]
        for name, served in models.items():
            assert served.stop_token_ids[
                : len(end_of_turn_ids(served.tokenizer, served.model))
            ] == end_of_turn_ids(served.tokenizer, served.model)
            body = {"model": name, "messages": CHAT, "max_tokens": 5, "temperature": 0}
            reply = client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert models["gemma2"].stop_token_ids[0] == models["gemma2"].tokenizer.convert_tokens_to_ids(
            "<end_of_turn>"
        )
        # The adapter model is the base with LoRA merged: a different model from the base behind the same API.
        assert not torch.equal(models["rlhf"].model.model.layers[0].self_attn.q_proj.weight,
                               models["llama"].model.model.layers[0].self_attn.q_proj.weight)  # fmt: skip
    finally:
        for served in models.values():
            served.close()


def test_serve_stops_on_gemmas_end_of_turn(tiny, tmp_path):
    from fastapi.testclient import TestClient

    from rlhfkit.serve import create_app, serve_model

    model = _untied_gemma(tiny, tmp_path)
    tok = load_tokenizer(tiny["gemma2"])
    force_token(model, tok, tok.convert_tokens_to_ids("<end_of_turn>"))
    served = serve_model("gemma", model, tok)
    try:
        body = {"model": "gemma", "messages": CHAT, "max_tokens": 24, "temperature": 0}
        reply = TestClient(create_app({"gemma": served})).post("/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["finish_reason"] == "stop" and reply["usage"]["completion_tokens"] < 24
    finally:
        served.close()


# ------------------------------------------------------------------------------------ adapters and GGUF files


def test_adapter_folder_loads_merged_and_generates(tiny, adapter, prompts, tmp_path, capsys):
    path, peft_model = adapter
    merged = load_causal_lm(path)
    ids = torch.tensor([_ids(load_tokenizer(path))])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        base = load_causal_lm(tiny["llama"])(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert type(merged).__name__ == "LlamaForCausalLM" and lean_llama.supports(merged)
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, base, atol=1e-3)
    code, _, err = _cli(capsys, "generate", "--model", path, "--prompts", prompts, "--out", tmp_path / "c.jsonl",
                        "--max-new-tokens", "4")  # fmt: skip
    assert code == 0, err
    code, _, err = _cli(capsys, "model", "merge", "--adapter", path, "--out", tmp_path / "merged")
    assert code == 0, err
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)


def test_gguf_file_loads_imports_and_generates(tiny, prompts, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = write_gguf(tiny["llama"], tmp_path / "tiny.gguf")
    source = load_causal_lm(tiny["llama"])
    loaded = load_causal_lm(gguf)
    tok = load_tokenizer(gguf)
    ids = _ids(tok)
    assert ids == _ids(load_tokenizer(tiny["llama"]))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=torch.tensor([ids])).logits,
                              source(input_ids=torch.tensor([ids])).logits, atol=1e-5)  # fmt: skip
    code, _, err = _cli(capsys, "model", "import", gguf, "--out", tmp_path / "imported")
    assert code == 0, err
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "imported")
    assert AutoTokenizer.from_pretrained(tmp_path / "imported").chat_template == tok.chat_template
    eos = GenerationConfig.from_pretrained(tmp_path / "imported").eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in ([eos] if isinstance(eos, int) else eos)
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=torch.tensor([ids])).logits,
                              source(input_ids=torch.tensor([ids])).logits, atol=1e-5)  # fmt: skip
    code, _, err = _cli(capsys, "generate", "--model", gguf, "--prompts", prompts, "--out", tmp_path / "c.jsonl",
                        "--max-new-tokens", "4")  # fmt: skip
    assert code == 0, err


# ------------------------------------------------------------------------------------------------ bad input


def _one_clear_error(code: int, err: str, *needles: str) -> None:
    assert code == 1 and "Traceback" not in err and err.count("rlhfkit: error:") == 1, err
    for needle in needles:
        assert needle in err, err


def test_unreachable_hub_name_fails_fast_offline(monkeypatch, prompts, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = _cli(capsys, "generate", "--model", "rlhfkit-tests/no-such-model", "--prompts", prompts,
                        "--out", tmp_path / "c.jsonl")  # fmt: skip
    _one_clear_error(code, err, "rlhfkit-tests/no-such-model", "cannot be reached", "cache")
    assert time.perf_counter() - start < 10


def test_unreachable_hub_fails_fast_without_offline_mode(monkeypatch, prompts, tmp_path, capsys):
    """No HF_HUB_OFFLINE, but the probe finds no Hub: the cache is consulted, nothing waits on retries."""
    import rlhfkit.models

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rlhfkit.models, "hub_reachable", lambda: False)
    start = time.perf_counter()
    code, _, err = _cli(capsys, "serve", "--model", "x=rlhfkit-tests/no-such-model")
    _one_clear_error(code, err, "rlhfkit-tests/no-such-model", "cannot be reached")
    assert time.perf_counter() - start < 10


def test_model_without_chat_template_is_named(tiny, prompts, tmp_path, capsys):
    code, _, err = _cli(capsys, "generate", "--model", tiny["gpt_neox"], "--prompts", prompts, "--out",
                        tmp_path / "c.jsonl")  # fmt: skip
    _one_clear_error(code, err, str(tiny["gpt_neox"]), "no chat template", "--chat-template")
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    code, _, err = _cli(capsys, "generate", "--model", tiny["gpt_neox"], "--prompts", prompts, "--out",
                        tmp_path / "c.jsonl", "--chat-template", tmp_path / "bad.jinja")  # fmt: skip
    _one_clear_error(code, err, "bad.jinja", "not a usable Jinja chat template")


def test_bad_gguf_files_are_one_clear_error(tiny, prompts, tmp_path, capsys):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    code, _, err = _cli(capsys, "model", "import", garbage, "--out", tmp_path / "x")
    _one_clear_error(code, err, "garbage.gguf")
    foreign = write_gguf(tiny["llama"], tmp_path / "foreign.gguf", architecture="bert")
    code, _, err = _cli(
        capsys, "generate", "--model", foreign, "--prompts", prompts, "--out", tmp_path / "c.jsonl"
    )
    _one_clear_error(code, err, "foreign.gguf")


def test_damaged_gguf_headers_fuzz(tiny, tmp_path, capsys):
    """A bounded fuzz: seeded flips in a GGUF file's header and metadata (before its tensor data), and
    truncations anywhere. `model import` either still loads it or exits 1 with one line, writing no --out."""
    import random

    import gguf as gguf_lib

    good = write_gguf(tiny["llama"], tmp_path / "good.gguf")
    header = gguf_lib.GGUFReader(str(good)).data_offset
    data = good.read_bytes()
    rng = random.Random("gguf-fuzz")
    for n in range(6):
        damaged = bytearray(data[: rng.randrange(len(data))] if n % 3 == 0 else data)
        if n % 3:
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(header)] = rng.randrange(256)
        case = tmp_path / f"case{n}.gguf"
        case.write_bytes(bytes(damaged))
        out = tmp_path / f"out{n}"
        code, _, err = _cli(capsys, "model", "import", case, "--out", out)
        if code == 0:
            continue
        _one_clear_error(code, err, str(case))
        assert not out.exists(), f"case {n}: wrote {out}"


def test_bad_device_and_adapter_without_base(tiny, prompts, tmp_path, capsys):
    if not torch.cuda.is_available():
        code, _, err = _cli(capsys, "generate", "--model", tiny["llama"], "--prompts", prompts, "--out",
                            tmp_path / "c.jsonl", "--device", "cuda")  # fmt: skip
        _one_clear_error(code, err, "CUDA is not available")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "gone")})
    )
    code, _, err = _cli(
        capsys, "generate", "--model", orphan, "--prompts", prompts, "--out", tmp_path / "c.jsonl"
    )
    _one_clear_error(code, err, "the adapter's base model", "gone")


# ------------------------------------------------------------------------------- chat, evaluate and cai


def test_chat_cli_talks_to_a_gguf_file(tiny, tmp_path, monkeypatch, capsys):
    gguf = write_gguf(tiny["llama"], tmp_path / "tiny.gguf")
    lines = iter(["What does the cat see?", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    code, out, err = _cli(capsys, "chat", "--model", gguf, "--max-new-tokens", "4", "--dtype", "float32")
    assert code == 0, err
    assert "assistant> " in out


def test_evaluate_samples_adapter_and_templated_models(tiny, adapter, prompts, neox_template):
    from rlhfkit.evaluate.run import EvalConfig, _check, generate_responses
    from rlhfkit.generation.loading import template_for

    cfg = EvalConfig(models={"neox": str(tiny["gpt_neox"]), "rlhf": str(adapter[0])}, prompts=str(prompts),
                     chat_template=[f"neox={neox_template}"], max_new_tokens=4, device="cpu", dtype="float32")  # fmt: skip
    _check(cfg)
    records = [json.loads(line) for line in prompts.read_text().splitlines()]
    for name, source in cfg.models.items():
        result = generate_responses(name, source, records, cfg)
        assert len(result["texts"]) == 3 and all(n <= 4 for n in result["tokens"])
    assert template_for("rlhf", cfg.chat_template) is None
    cfg.chat_template = [f"nexo={neox_template}"]
    with pytest.raises(RlhfkitError, match="no model named 'nexo'"):
        _check(cfg)


def test_cai_revise_and_label_run_on_real_architectures(tiny, prompts, tmp_path, capsys):
    code, _, err = _cli(capsys, "cai", "revise", "--model", tiny["gemma2"], "--prompts", prompts, "--out",
                        tmp_path / "rev.jsonl", "--revisions", "1", "--max-new-tokens", "4", "--device", "cpu",
                        "--dtype", "float32")  # fmt: skip
    assert code == 0, err
    chains = [json.loads(line) for line in (tmp_path / "rev.chains.jsonl").read_text().splitlines()]
    assert len(chains) == 3 and all(len(c["steps"]) == 1 for c in chains)
    candidates = tmp_path / "cand.jsonl"
    write_jsonl(candidates, [{"id": "p0", "prompt": CHAT, "completions": [[{"role": "assistant", "content": a}]
                for a in ("The cat sees a red apple.", "Bread.")]}])  # fmt: skip
    gguf = write_gguf(tiny["llama"], tmp_path / "labeler.gguf")
    code, _, err = _cli(capsys, "cai", "label", "--labeler", gguf, "--candidates", candidates, "--out",
                        tmp_path / "cmp.jsonl", "--dtype", "float32")  # fmt: skip
    assert code == 0, err
    label = json.loads((tmp_path / "cmp.jsonl").read_text().splitlines()[0])["label"]
    assert 0 < label < 1


def test_peft_wrapped_model_generates_like_its_merged_twin(tiny):
    """PPO samples from a LoRA policy still wrapped by peft: left-padded rows must get their own positions
    (GPT-2's learned absolute positions show it; RoPE models hide a shift, it is relative)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(tiny["llama"])
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.2)
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    wrapped = get_peft_model(model, lora).eval()
    prompts = [_ids(tok), _ids(tok, [{"role": "user", "content": "Where does the old king sell bread?"}])]
    params = SamplingParams(max_new_tokens=12, temperature=0)
    sampled = generate(wrapped, prompts, params, pad_token_id=pad_id(tok))
    merged = wrapped.merge_and_unload()
    alone = [generate(merged, [p], params, pad_token_id=pad_id(tok))[0] for p in prompts]  # no padding at all
    assert [c.token_ids for c in sampled] == [c.token_ids for c in alone]
