"""Stage 3b, the reward model: `model` (load, render, score; `load_scorer`), `train` (Bradley-Terry training,
`run(RewardConfig)`), `evaluate` (accuracy, calibration, score distributions), `commands` (`rlhfkit reward`)."""
