"""No model load runs code the user did not ask for: no Hub kernels, no code from a model folder.

transformers 5.x turns Hub kernels on by default (`model.train()` then fetches and runs compiled code from
the Hub), and asks on stdin before running a folder's own Python: a scripted "y" used to be the consent."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit.errors import RlhfkitError
from rlhfkit.load_policy import POLICY, allowing

SRC = Path(__file__).resolve().parents[1] / "src" / "rlhfkit"


@pytest.fixture(scope="module")
def adapter_dirs(policy_dir, tmp_path_factory) -> dict[str, Path]:
    """A causal-LM adapter and a reward-model adapter (with its score head) on the micro policy."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("adapters")
    lm = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(policy_dir), use_kernels=False),
        LoraConfig(r=2, target_modules=["q_proj"]),
    )
    lm.save_pretrained(root / "lm")
    rm = AutoModelForSequenceClassification.from_pretrained(str(policy_dir), num_labels=1, use_kernels=False)
    rm = get_peft_model(rm, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["score"]))
    rm.save_pretrained(root / "rm")
    for name in ("lm", "rm"):
        config = json.loads((root / name / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(policy_dir)
        (root / name / "adapter_config.json").write_text(json.dumps(config))
    return {"lm": root / "lm", "rm": root / "rm"}


def test_no_load_path_turns_on_hub_kernels(policy_dir, rm_dir, adapter_dirs):
    from rlhfkit.lora import load_frozen_lm, load_merged_classifier
    from rlhfkit.models import load_causal_lm
    from rlhfkit.reward.model import load_reward_model, load_scorer

    loaded = {
        "causal lm": load_causal_lm(policy_dir),
        "causal lm adapter": load_causal_lm(adapter_dirs["lm"]),
        "frozen lm": load_frozen_lm(str(policy_dir), "cpu", torch.float32),
        "reward model to train": load_reward_model(policy_dir, new_head=True)[0],
        "reward scorer": load_scorer(rm_dir)[0],
        "reward adapter": load_merged_classifier(adapter_dirs["rm"], num_labels=1),
    }
    for what, model in loaded.items():
        model.train()  # where transformers 5.x would kernelize
        assert not model.use_kernels, f"{what}: Hub kernels are on"


def test_hub_kernels_are_an_explicit_opt_in():
    from rlhfkit.load_policy import from_pretrained_kwargs

    assert from_pretrained_kwargs() == {"trust_remote_code": False, "use_kernels": False}
    # a stage the pipeline runs in-process keeps what the outer command allowed
    with allowing(hub_kernels=True), allowing():
        assert from_pretrained_kwargs()["use_kernels"] is True
    assert POLICY.hub_kernels is False  # and it does not leak into the next command


def test_every_from_pretrained_in_the_source_takes_the_policy():
    """A new `from_pretrained` call that forgets the policy fails here, not on a user's GPU."""
    offenders = []
    for path in SRC.rglob("*.py"):
        source = path.read_text()
        for func in ast.walk(ast.parse(source)):
            if not isinstance(func, ast.FunctionDef):
                continue
            body = ast.get_source_segment(source, func) or ""
            for node in ast.walk(func):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained"):
                    continue
                receiver = getattr(node.func.value, "id", "")
                if receiver == "PeftModel":  # loads adapter weights onto a model already loaded by policy
                    continue
                if "from_pretrained_kwargs" not in body and "kwargs" not in ast.unparse(node):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, f"from_pretrained without load_policy.from_pretrained_kwargs(): {offenders}"


def plant_remote_code(src: Path, dst: Path) -> Path:
    """A model folder that names its own Python in `auto_map`; importing that code writes `ran.txt`."""
    shutil.copytree(src, dst)
    marker = dst / "ran.txt"
    (dst / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((dst / "config.json").read_text())
    config["model_type"] = "evil"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(config))
    return marker


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", "--model", "{m}"],
        ["generate", "--model", "{m}", "--prompts", "{p}", "--out", "{o}"],
        ["reward", "train", "--model", "{m}", "--data", "{c}", "--out", "{o}"],
    ],
    ids=["chat", "generate", "reward-train"],
)
def test_a_yes_on_stdin_never_runs_a_model_folders_code(policy_dir, prompts_file, tmp_path, argv):
    model = tmp_path / "model"
    marker = plant_remote_code(policy_dir, model)
    comparisons = tmp_path / "c.jsonl"
    turn = [{"role": "user", "content": "hi"}]
    pair = {"prompt": turn, "chosen": [{"role": "assistant", "content": "a"}]}
    pair["rejected"] = [{"role": "assistant", "content": "b"}]
    comparisons.write_text("".join(json.dumps(pair) + "\n" for _ in range(8)))
    args = [a.format(m=model, p=prompts_file, o=tmp_path / "out", c=comparisons) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        input="yes\ny\nhello secret prompt\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not marker.exists(), "the folder's code ran"
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "auto_map" in err and "--trust-remote-code" in err, err
    assert "Traceback" not in err and "hello secret prompt" not in err
    assert not (tmp_path / "out").exists()


def test_trust_remote_code_opts_in(policy_dir, tmp_path):
    from rlhfkit.models import load_causal_lm

    marker = plant_remote_code(policy_dir, tmp_path / "model")
    with pytest.raises(RlhfkitError, match="auto_map"):
        load_causal_lm(tmp_path / "model")
    assert not marker.exists()
    sys.path.insert(0, str(tmp_path))  # where transformers copies the module for the import
    try:
        with allowing(trust_remote_code=True):
            model = load_causal_lm(tmp_path / "model")
    finally:
        sys.path.remove(str(tmp_path))
    assert marker.exists() and type(model).__name__ == "EvilModel"
