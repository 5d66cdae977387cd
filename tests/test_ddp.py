"""The shared loop under torchrun: 2 gloo processes at the same global batch follow the single-process curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if line]


def test_ddp_two_processes_match_single_process(corpus_file, tokenizer_dir, tmp_path):
    common = ["pretrain", "--data", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--preset", "micro",
              "--seq-len", "32", "--batch-size", "8", "--micro-batch-size", "2", "--max-steps", "12",
              "--eval-every", "12", "--eval-tokens", "1024", "--sample-tokens", "2", "--log-every", "1",
              "--lr", "3e-3", "--warmup-steps", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "rlhfkit.cli", *common, "--out", str(single)], check=True, env=env,
                   capture_output=True, timeout=300)  # fmt: skip
    ddp = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlhfkit.cli",
         *common, "--out", str(ddp)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _losses(single), _losses(ddp)
    assert len(a) == len(b) == 12
    # Same data, same init, gradient = global-batch mean: only float summation order differs.
    for x, y in zip(a, b):
        assert abs(x - y) < 1e-3 * max(1.0, abs(x)), (a, b)
    assert a[-1] < a[0]
    assert json.loads((ddp / "rlhfkit.json").read_text())["metrics"]["step"] == 12
