"""Bringing models in: `rlhfkit model import` (a .gguf file or Hub name -> a plain Hugging Face folder) and
`rlhfkit model merge` (a PEFT adapter + its base -> one plain folder). The code is in `convert.py`."""
