"""rlhfkit: turn a raw text corpus into a helpful assistant, one visible stage at a time."""

__version__ = "0.1.0"
