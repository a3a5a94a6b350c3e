"""Token ids for prompts and completions, the same for generation and training on every backend."""

from __future__ import annotations

from typing import Sequence

from scoreflow.model.backend import Messages

_SENTINEL = "\x00SCOREFLOW_COMPLETION\x00"


class ChatFormat:
    """Wraps an HF tokenizer: prompt = the chat template with the generation prompt; completion =
    the assistant text followed by the template's end-of-turn token, exactly as generated."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template")
        probe = [{"role": "user", "content": "x"}]
        prompt = self.render(probe)
        full = tokenizer.apply_chat_template(
            probe + [{"role": "assistant", "content": _SENTINEL}], tokenize=False
        )
        if not full.startswith(prompt) or _SENTINEL not in full:
            raise ValueError("the chat template does not extend the generation prompt with the reply")
        after = full[full.index(_SENTINEL) + len(_SENTINEL):]
        eos = tokenizer.eos_token or ""
        # Keep what the model itself would emit to end its turn: up to and including EOS.
        self.end_of_turn = after[: after.index(eos) + len(eos)] if eos and eos in after else after.rstrip()
        self._context: dict[str, int] = {}
        self.stop_ids = sorted(
            {i for i in [tokenizer.eos_token_id, *self.encode_text(self.end_of_turn)[-1:]] if i is not None}
        )

    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, messages: Messages) -> list[int]:
        return self.encode_text(self.render(messages))

    def context_length(self, messages: Messages, ids: Sequence[int] | None = None) -> int:
        """How many leading tokens of the prompt of `messages` (its token ids `ids`) every prompt that
        differs only in its last message shares: its system prompt and few-shot turns, the part a
        prompt cache can keep."""
        if not messages:
            return 0
        ids = list(ids) if ids is not None else self.prompt_ids(messages)
        key = self.render(list(messages[:-1])) if len(messages) > 1 else ""
        n = self._context.get(key)
        if n is None:
            last = messages[-1]
            a, b = (self.prompt_ids([*messages[:-1], {**last, "content": c}]) for c in ("x", "y"))
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            self._context[key] = n
        # The cache is keyed by this prompt's own tokens, so a split that tokenizes differently is only a miss.
        return min(n, len(ids) - 1)  # the last prompt token's logits start the decoding

    def completion_ids(self, text: str) -> list[int]:
        return self.encode_text(text + self.end_of_turn)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` after the earliest stop string (kept). Returns (text, stopped)."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return (text[:best], True) if best is not None else (text, False)


class Encoded:
    """Token ids of every unique (prompt, completion) in a set of pairs, cut to max_length. Shared by
    both backends, so they train on exactly the same tokens. `truncated` counts completions that lost
    tokens to the cut: a pair whose texts differ only after it teaches nothing."""

    def __init__(self, fmt: ChatFormat, max_length: int):
        self.fmt, self.max_length = fmt, max_length
        self.seqs: list[list[int]] = []
        self.prompt_lens: list[int] = []
        self.opening_lens: list[int] = []  # leading prompt tokens shared with prompts that differ only at the end
        self._index: dict[tuple[str, str], int] = {}
        self._prompts: dict[str, list[int]] = {}
        self._openings: dict[str, int] = {}
        self.truncated = 0

    def add(self, prompt: Messages, completion: str) -> int:
        ptext = self.fmt.render(prompt)
        key = (ptext, completion)
        if key not in self._index:
            pids = self._prompts.setdefault(ptext, self.fmt.encode_text(ptext))
            whole = self.fmt.completion_ids(completion)
            cids = whole[: max(1, self.max_length - len(pids))]
            self.truncated += len(cids) < len(whole)
            self._index[key] = len(self.seqs)
            self.seqs.append(pids + cids)
            self.prompt_lens.append(len(pids))
            self.opening_lens.append(self._openings.setdefault(ptext, self.fmt.context_length(prompt, pids)))
        return self._index[key]

    def completion_len(self, i: int) -> int:
        return len(self.seqs[i]) - self.prompt_lens[i]
