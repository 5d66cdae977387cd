"""$RLHFKIT_PEAK_MEMORY_FILE: the `rlhfkit` command reports its peak GPU memory at exit (benchmarks/gpu_check.py
reads it; torch.cuda.max_memory_allocated only sees its own process). CUDA is faked: no GPU here."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main


@pytest.fixture
def fake_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 4 * 2**30)
    monkeypatch.setattr("rlhfkit.ppo.trainer.run", lambda config: config.out)


PPO = ["ppo", "--policy", "p", "--reward", "r", "--prompts", "x.jsonl"]


@pytest.mark.parametrize(("world_size", "suffix"), [("1", ""), ("2", ".rank1")])
def test_peak_memory_is_written_at_exit_when_asked(fake_cuda, monkeypatch, tmp_path, world_size, suffix):
    report = tmp_path / "peak.json"
    monkeypatch.setenv("RLHFKIT_PEAK_MEMORY_FILE", str(report))
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("RANK", "1")
    assert main([*PPO, "--out", str(tmp_path / "ppo")]) == 0
    written = json.loads((tmp_path / f"peak.json{suffix}").read_text())  # one file per rank under torchrun
    assert written == {
        "device": "Fake GPU",
        "max_memory_allocated_bytes": 3 * 2**30,
        "max_memory_reserved_bytes": 4 * 2**30,
    }


def test_an_unwritable_report_does_not_fail_the_run(fake_cuda, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RLHFKIT_PEAK_MEMORY_FILE", str(tmp_path / "missing" / "peak.json"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main([*PPO, "--out", str(tmp_path / "ppo")]) == 0
    assert "cannot write the peak memory report" in capsys.readouterr().err
