"""What every executor of a plan does with tokens, whatever runs the kernels: the
count of cached tokens, chunked prefill, one-token decode, the context-window check
and greedy decoding. A subclass sets `plan` and implements `_forward`."""

from __future__ import annotations

import numpy as np


class PlanSession:
    plan: dict
    past_len = 0

    def _forward(self, entry: str, tokens: np.ndarray) -> np.ndarray:
        """Run entry point `entry` for `tokens` after the `past_len` cached ones; return
        the last token's logits [vocab] (float32)."""
        raise NotImplementedError

    def reset(self) -> None:
        self.past_len = 0

    def _step(self, entry: str, tokens: np.ndarray) -> np.ndarray:
        n, window = len(tokens), self.plan["context_window"]
        if self.past_len + n > window:
            raise ValueError(f"context window of {window} tokens exceeded ({self.past_len} + {n})")
        logits = self._forward(entry, np.ascontiguousarray(tokens, np.uint32))
        self.past_len += n
        return logits

    def prefill(self, tokens) -> np.ndarray:
        """Run tokens after the cached ones (in chunks of prefill_chunk); return the last
        token's logits [vocab] (float32)."""
        tokens = np.asarray(tokens, np.uint32)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("prefill needs a non-empty 1-D list of token ids")
        chunk = self.plan["prefill_chunk"]
        logits = None
        for i in range(0, len(tokens), chunk):
            logits = self._step("prefill", tokens[i: i + chunk])
        return logits

    def decode(self, token: int) -> np.ndarray:
        return self._step("decode", np.array([token], np.uint32))

    def greedy(self, prompt, max_new_tokens: int, stop_ids=()) -> list[int]:
        self.reset()
        logits = self.prefill(prompt)
        out = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop_ids:
                break
            logits = self.decode(tok)
        return out
