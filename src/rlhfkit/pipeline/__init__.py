"""The whole pipeline in one command: world → tokenizer → pretrain → sft → candidates → labels → reward → ppo
→ evaluate → report, each stage writing the folder of its name under the run directory.

- `stages.py`: the stage table (name, config class and `run`, inputs and output, post-stage hook);
- `defaults.py`: each stage's options (`defaults.toml`, the `quick.toml` overlay, the user's tables);
- `runner.py`: keys, skip and resume; calls each stage's `run(config)` in this process;
- `record.py`: `pipeline.json`, the versioned run record the report reads.
"""

from rlhfkit.pipeline.defaults import UNSEEDED, stage_options
from rlhfkit.pipeline.record import RunRecord, StageRecord
from rlhfkit.pipeline.runner import build_config, command_line, run_pipeline, stage_key
from rlhfkit.pipeline.stages import (
    ALL_STAGE_NAMES,
    CAI_STAGES,
    HYBRID_STAGES,
    METHOD_STAGES,
    METHODS,
    RLVR_METHOD,
    RLVR_STAGES,
    STAGES,
    Stage,
    parse_methods,
    rlhf_stages,
    run_path,
)

__all__ = [
    "ALL_STAGE_NAMES",
    "CAI_STAGES",
    "HYBRID_STAGES",
    "METHODS",
    "METHOD_STAGES",
    "RLVR_METHOD",
    "RLVR_STAGES",
    "STAGES",
    "UNSEEDED",
    "RunRecord",
    "Stage",
    "StageRecord",
    "build_config",
    "command_line",
    "parse_methods",
    "rlhf_stages",
    "run_path",
    "run_pipeline",
    "stage_key",
    "stage_options",
]
