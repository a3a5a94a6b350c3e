"""What an executor call returns and costs: Reply, Usage (calls, tokens, USD) with the price table, and
the ReplyCache that answers repeated deterministic requests within a run."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scoreflow.model.backend import Messages

# USD per million (prompt, completion) tokens. Longest matching prefix wins, so dated snapshots
# ("gpt-4o-mini-2024-07-18") take their family's price. Override with executor.price_*_per_mtok.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0), "gpt-5-mini": (0.25, 2.0), "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0), "gpt-4o-mini": (0.15, 0.60), "gpt-4-turbo": (10.0, 30.0), "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo": (0.50, 1.50), "o1": (15.0, 60.0), "o1-mini": (1.10, 4.40), "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40), "o4-mini": (1.10, 4.40),
}
def price_for(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a known model name, else None."""
    name = model.lower().split("/")[-1]
    best = max((k for k in PRICES if name == k or name.startswith(k + "-")), key=len, default=None)
    return PRICES[best] if best else None


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0
    cache_hits: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, reply: Reply, seconds: float, price: tuple[float, float] = (0.0, 0.0)) -> None:
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.seconds += seconds
        self.cost_usd += (reply.prompt_tokens * price[0] + reply.completion_tokens * price[1]) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Usage":
        """Restore what an earlier session spent (for --resume): caps count it."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ReplyCache:
    """Replies by sha256 of (model, messages, max_tokens, temperature, rep). Only deterministic
    requests (temperature 0) are cached unless `sampled` is set: repeated sampled calls inside one
    run are meant to differ. With a path, entries are appended as JSON lines and reloaded, so a
    resumed run does not pay twice. Holds prompts and replies only, never credentials."""

    def __init__(self, path: str | Path | None = None, sampled: bool = False):
        self.sampled = sampled
        self.entries: dict[str, Reply] = {}
        self.inflight: dict[str, asyncio.Future] = {}
        self.path = Path(path) if path else None
        self._file = None
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                    self.entries[d["key"]] = Reply(d["text"], int(d["prompt_tokens"]), int(d["completion_tokens"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash

    def applies(self, temperature: float) -> bool:
        return self.sampled or temperature == 0

    @staticmethod
    def key(model: str, messages: Messages, max_tokens: int, temperature: float, rep: int) -> str:
        blob = json.dumps([model, list(messages), max_tokens, float(temperature), rep], sort_keys=True,
                          ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> Reply | None:
        return self.entries.get(key)

    def put(self, key: str, reply: Reply) -> None:
        self.entries[key] = reply
        if self.path is not None:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(json.dumps({"key": key, **asdict(reply)}, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
