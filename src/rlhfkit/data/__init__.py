"""Dataset formats: JSONL reading with line numbers, chat and comparison validation, converters."""
