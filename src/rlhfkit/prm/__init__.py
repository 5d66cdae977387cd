"""Process reward models: a reward for each step of a tool-using episode, learned from the world's step labels.

- `steps`: what a step is, the world's label for it, and the text a PRM reads;
- `label`: `rlhfkit prm label`: episodes played by a policy, each tool call labelled;
- `train`: `rlhfkit prm train`: a scalar head trained with binary cross-entropy on those labels;
- `score`: `ProcessModel`, the trained PRM as the process term of `--reward verifier+process`.
"""
