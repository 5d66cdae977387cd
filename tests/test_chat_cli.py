"""`rlhfkit chat` driven through a pseudo-terminal, as a person would use it; exits cleanly on EOF."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from transformers import AutoTokenizer

from rlhfkit.artifacts import save_hf_checkpoint
from rlhfkit.models import build_model


def _read_until(fd: int, needle: bytes, timeout: float = 60) -> bytes:
    buf = b""
    end = time.time() + timeout
    while needle not in buf:
        if time.time() > end:
            raise AssertionError(f"timed out waiting for {needle!r}; got {buf[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_chat_in_a_pty_answers_resets_and_exits_on_eof(tmp_path, tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    save_hf_checkpoint(build_model("micro", len(tok), 128, tok), tok, tmp_path / "m")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "chat", "--model", str(tmp_path / "m"), "--system", "Be brief.",
         "--max-new-tokens", "5"],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    try:
        assert b"chat mode" in _read_until(leader, b"you> ")
        os.write(leader, b"Who sells bread?\n")
        assert b"assistant> " in _read_until(leader, b"you> ")
        os.write(leader, b"/reset\n")
        assert b"conversation cleared" in _read_until(leader, b"you> ")
        os.write(leader, b"\x04")  # Ctrl-D: EOF at an empty prompt
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
