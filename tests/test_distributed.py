"""Every stage under torchrun: 2 gloo processes on the CPU at the same global batch follow the single-process
curve (pretrain, sft, reward; FSDP2 too), PPO's distributed update equals the single-process update, runs
resume from their checkpoints, and bad input stops every rank with one clear error instead of a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import WORDS  # noqa: F401  (policy_dir / rm_dir fixtures come from conftest)
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.train.distributed import DistInfo, shard_range

TESTS = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(
    args: list[str], nproc: int, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`rlhfkit <args>` with `nproc` torchrun processes (plain python for 1), one CPU thread each."""
    # "--" ends torchrun's own options: its parser would take e.g. `generate --n` for an abbreviated --nnodes.
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = (
        [*head, "-m", "rlhfkit.cli", "--", *args]
        if nproc > 1
        else [sys.executable, "-m", "rlhfkit.cli", *args]
    )
    return subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=timeout)


def ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stderr[-3000:]
    # A rank that exits without leaving the process group makes gloo abort the job.
    assert "terminate called" not in run.stderr


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def close(a: list[float], b: list[float], rel: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(1.0, abs(x)) for x, y in zip(a, b))


def test_shard_range_splits_in_order_and_covers_everything():
    for n in (0, 1, 7, 8):
        parts = [list(shard_range(n, DistInfo(rank, 3, rank))) for rank in range(3)]
        assert [i for p in parts for i in p] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_nccl_reductions_travel_on_the_gpu_and_gloo_on_the_cpu():
    from rlhfkit.train.distributed import reduce_device

    assert reduce_device(DistInfo(0, 2, 0, "gloo")).type == "cpu"
    if torch.cuda.is_available():
        assert reduce_device(DistInfo(0, 2, 0, "nccl")).type == "cuda"


def test_pretrain_two_processes_match_one(corpus_file, tokenizer_dir, tmp_path):
    common = ["pretrain", "--data", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--preset", "micro",
              "--seq-len", "32", "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "8",
              "--eval-every", "8", "--eval-tokens", "1024", "--sample-tokens", "2", "--log-every", "1",
              "--lr", "3e-3", "--warmup-steps", "2", "--device", "cpu"]  # fmt: skip
    ok(launch([*common, "--out", str(tmp_path / "one")], 1))
    ok(launch([*common, "--out", str(tmp_path / "two")], 2))
    a = [r["loss"] for r in records(tmp_path / "one")]
    b = [r["loss"] for r in records(tmp_path / "two")]
    # Same data, same init, gradient = global-batch mean: only float summation order differs.
    assert len(a) == 8 and close(a, b, 1e-3), (a, b)
    assert a[-1] < a[0]
    assert json.loads((tmp_path / "two" / "rlhfkit.json").read_text())["metrics"]["step"] == 8


def test_a_rank_that_dies_stops_the_others_with_one_line_each_and_the_job_resumes(
    corpus_file, tokenizer_dir, tmp_path
):
    import signal
    import time

    out = tmp_path / "run"
    args = ["pretrain", "--data", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--preset", "micro",
            "--seq-len", "32", "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "400",
            "--eval-every", "1000", "--save-every", "5", "--sample-tokens", "2", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    job = subprocess.Popen(
        [*head, "-m", "rlhfkit.cli", "--", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    rank1 = next(
        int(pid)
        for pid in subprocess.run(
            ["pgrep", "-P", str(job.pid)], capture_output=True, text=True
        ).stdout.split()
        if "RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    )
    os.kill(rank1, signal.SIGKILL)
    _, err = job.communicate(timeout=60)
    assert job.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("rlhfkit: error:")]
    # Rank 0 either sees the broken connection first or is stopped by torchrun: one line either way.
    assert ours and all(line.startswith("rlhfkit: error: rank 0 of 2") for line in ours), err[-3000:]
    assert "resume" in ours[0]
    assert "Traceback" not in err.split(ours[0])[0]  # none from rank 0 (torchrun's own report comes after)

    resumed = launch([*args[:-2], "--max-steps", "12", "--out", str(out)], 2)  # a shorter run to the end
    ok(resumed)
    assert "resuming from" in resumed.stdout


# --------------------------------------------------------------------------------------------- sft, fsdp


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory, tokenizer_dir):
    from transformers import AutoTokenizer

    from rlhfkit.artifacts import save_hf_checkpoint
    from rlhfkit.models import build_model

    root = tmp_path_factory.mktemp("sft")
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok, seed=0), tok, root / "base")
    chats = [
        {"messages": [{"role": "user", "content": f"Who sells {w}?"},
                      {"role": "assistant", "content": f"The {w} seller, {i} times."}]}
        for i, w in enumerate(["bread", "apples", "boats", "soup", "letters", "stone"] * 8)
    ]  # fmt: skip
    write_jsonl(root / "chats.jsonl", chats)
    return root / "base", root / "chats.jsonl"


def sft_args(sft_data, out: Path, steps: int, *extra: str) -> list[str]:
    base, chats = sft_data
    return ["sft", "--model", str(base), "--data", str(chats), "--out", str(out), "--epochs", "0",
            "--max-steps", str(steps), "--batch-size", "8", "--micro-batch-size", "2", "--lr", "5e-3",
            "--warmup-steps", "1", "--log-every", "1", "--eval-every", "100", "--save-every", "2",
            "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.slow
def test_sft_ddp_and_fsdp_match_one_process_and_resume(sft_data, tmp_path):
    ok(launch(sft_args(sft_data, tmp_path / "one", 4), 1))
    ok(launch(sft_args(sft_data, tmp_path / "ddp", 4), 2))
    # FSDP2 runs on the CPU with gloo in this torch: a sharded checkpoint at step 2, then a resumed run to 4.
    ok(launch(sft_args(sft_data, tmp_path / "fsdp", 2, "--shard", "fsdp"), 2))
    ckpt = json.loads((tmp_path / "fsdp" / "checkpoint" / "state.json").read_text())
    assert ckpt["sharded"] and ckpt["world_size"] == 2 and (tmp_path / "fsdp" / "checkpoint" / "dcp").is_dir()
    resumed = launch(sft_args(sft_data, tmp_path / "fsdp", 4, "--shard", "fsdp"), 2)
    ok(resumed)
    assert "resuming from" in resumed.stdout
    one, ddp, fsdp = ([r["loss"] for r in records(tmp_path / d)] for d in ("one", "ddp", "fsdp"))
    assert len(one) == 4 and close(one, ddp) and close(one, fsdp), (one, ddp, fsdp)
    # The FSDP run exports a normal Hugging Face folder with the same weights as the single-process run.
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "fsdp" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # A sharded checkpoint is not silently loaded into a DDP run.
    mixed = launch(sft_args(sft_data, tmp_path / "fsdp", 6), 2)
    assert mixed.returncode == 1 and "--shard fsdp" in mixed.stderr + mixed.stdout


# --------------------------------------------------------------------------------------------- reward


@pytest.mark.slow
def test_reward_ddp_and_fsdp_match_one_process_and_leave_cleanly(policy_dir, tmp_path):
    from test_reward import synthetic_pairs

    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, synthetic_pairs(64, seed=1))
    common = ["reward", "train", "--model", str(policy_dir), "--data", str(data), "--epochs", "0",
              "--max-steps", "3", "--batch-size", "8", "--micro-batch-size", "2", "--lr", "1e-2",
              "--warmup-steps", "1", "--log-every", "1", "--max-length", "64", "--device", "cpu"]  # fmt: skip
    ok(launch([*common, "--out", str(tmp_path / "one")], 1))
    ok(launch([*common, "--out", str(tmp_path / "two")], 2))
    ok(launch([*common, "--out", str(tmp_path / "fsdp"), "--shard", "fsdp"], 2))
    a = records(tmp_path / "one")
    for run in ("two", "fsdp"):
        b = records(tmp_path / run)
        for k in ("loss", "accuracy", "grad_norm"):
            assert close([r[k] for r in a], [r[k] for r in b]), (run, k, a, b)
        # The calibrated model (scores shifted on rank 0 after the gather) matches the single process's.
        one, other = (
            json.loads((tmp_path / d / "rlhfkit.json").read_text())["metrics"] for d in ("one", run)
        )
        assert abs(one["score_mean"] - other["score_mean"]) < 1e-4, (one, other)


# --------------------------------------------------------------------------------------------- ppo


def _worker(policy_dir: Path, out: Path, nproc: int, advantage: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(TESTS / "ppo_update_worker.py"), str(policy_dir), str(out), advantage]  # fmt: skip
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    ok(run)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_update_on_two_ranks_equals_one(policy_dir, tmp_path, advantage):
    one = _worker(policy_dir, tmp_path / "one.json", 1, advantage)
    two = _worker(policy_dir, tmp_path / "two.json", 2, advantage)
    assert one["episodes"] == two["episodes"]  # gather_rollout restored the global order
    for k, v in one["metrics"].items():
        if k != "time_training":
            assert abs(v - two["metrics"][k]) <= 1e-5 * max(1.0, abs(v)), (k, v, two["metrics"][k])
    assert one["metrics"]["policy_loss"] != 0
    # gae runs every update; rloo's approx-KL limit stops its epochs early, on both ranks at the same point.
    assert one["metrics"]["updates"] == 4 if advantage == "gae" else one["metrics"]["updates"] < 4
    assert close(one["first"], two["first"], 1e-6)
    assert all(abs(v - two["param_sums"][k]) < 1e-4 for k, v in one["param_sums"].items())


def ppo_args(policy_dir, rm_dir, prompts_file, out: Path, steps: int) -> list[str]:
    return ["ppo", "--policy", str(policy_dir), "--reward", str(rm_dir), "--prompts", str(prompts_file),
            "--out", str(out), "--steps", str(steps), "--batch-size", "8", "--minibatch-size", "4",
            "--epochs", "1", "--max-new-tokens", "6", "--save-every", "1", "--sample-every", "1",
            "--num-samples", "1", "--device", "cpu"]  # fmt: skip


@pytest.mark.slow
def test_ppo_two_processes_log_once_resume_and_refuse_another_world_size(
    policy_dir, rm_dir, prompts_file, tmp_path
):
    out = tmp_path / "ppo"
    ok(launch(ppo_args(policy_dir, rm_dir, prompts_file, out, 2), 2))
    assert [r["step"] for r in records(out)] == [1, 2]  # rank 0 alone writes
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 8 + [2] * 8  # the global batch, each episode once
    assert json.loads((out / "checkpoint" / "state.json").read_text())["world_size"] == 2
    resumed = launch(ppo_args(policy_dir, rm_dir, prompts_file, out, 3), 2)
    ok(resumed)
    assert "resuming from" in resumed.stdout and [r["step"] for r in records(out)] == [1, 2, 3]
    assert (out / "value" / "model.safetensors").exists() and (out / "model.safetensors").exists()
    other = launch(ppo_args(policy_dir, rm_dir, prompts_file, out, 4), 1)
    assert other.returncode == 1
    assert "same number of processes" in other.stderr and "Traceback" not in other.stderr


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.slow
def test_bad_world_sizes_and_nccl_without_gpus_fail_fast_with_one_clear_error(sft_data, policy_dir, rm_dir,
                                                                              prompts_file, tmp_path):  # fmt: skip
    odd = launch(sft_args(sft_data, tmp_path / "odd", 2, "--batch-size", "7"), 2, 120)  # the last flag wins
    assert odd.returncode != 0 and "--batch-size 7 chats must divide evenly across 2 processes" in odd.stderr
    args = ppo_args(policy_dir, rm_dir, prompts_file, tmp_path / "p", 1)
    mb = launch([*args, "--minibatch-size", "3"], 2, 120)
    assert mb.returncode != 0 and "--minibatch-size 3 episodes must divide evenly" in mb.stderr
    if not torch.cuda.is_available():
        nccl = launch(
            sft_args(sft_data, tmp_path / "nccl", 2), 2, 120, {**ENV, "RLHFKIT_DIST_BACKEND": "nccl"}
        )
        assert nccl.returncode != 0 and "the nccl backend needs CUDA GPUs" in nccl.stderr
    for run in (odd, mb):  # each rank prints the one-line error (torchrun then adds its own failure report)
        assert "rlhfkit: error:" in run.stderr and "RlhfkitError" not in run.stderr


# --------------------------------------------------------------------------------------------- generate, evaluate


@pytest.mark.slow
def test_generate_and_evaluate_split_prompts_and_write_one_ordered_output(policy_dir, prompts_file, tmp_path):
    # Greedy decoding does not depend on how the prompts are split, so 2 ranks must write 1 rank's files.
    gen = ["generate", "--model", str(policy_dir), "--prompts", str(prompts_file), "--temperature", "0",
           "--max-new-tokens", "6", "--n", "2"]  # fmt: skip
    ok(launch([*gen, "--out", str(tmp_path / "one.jsonl")], 1))
    ok(launch([*gen, "--out", str(tmp_path / "two.jsonl")], 2))
    one, two = ((tmp_path / f).read_text().splitlines() for f in ("one.jsonl", "two.jsonl"))
    assert len(one) == 24 and one == two and all(len(json.loads(r)["completions"]) == 2 for r in one)
    ev = ["evaluate", "--model", f"a={policy_dir}", "--prompts", str(prompts_file), "--temperature", "0",
          "--max-new-tokens", "6", "--quiet"]  # fmt: skip
    ok(launch([*ev, "--out", str(tmp_path / "e1")], 1))
    two_ranks = launch([*ev, "--out", str(tmp_path / "e2")], 2)
    ok(two_ranks)
    assert two_ranks.stdout.count("evaluate: results written") == 1
    r1, r2 = ((tmp_path / d / "responses.jsonl").read_text() for d in ("e1", "e2"))
    assert r1 == r2 and len(r1.splitlines()) == 24
