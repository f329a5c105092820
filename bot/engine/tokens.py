"""A local, deterministic estimate of how many tokens Claude reads for a prompt. Pure.

Why an estimate: Anthropic publishes no tokenizer for current Claude models (the SDK's old
offline counter was for Claude 2 and is gone; `messages.count_tokens` is an API call, and the
bot must decide where to put cache breakpoints without a round trip). So one estimator is the
single source for both the bot's breakpoint decisions (`bot/engine/claude.py`) and the Anthropic
emulator's usage numbers (`tests/emulators/anthropic_api.py`): the benchmark's cache figures then
measure the layout, not a disagreement between two counters.

The estimate follows how BPE tokenizers split English: a word costs one token per ~4 letters
(rounded up), each punctuation mark or symbol one token, and every content block a few tokens of
framing. Against a real API it runs within roughly ±15% on prose; a breakpoint is only placed
with a safety margin over the model's minimum (`CACHE_MARGIN` in claude.py) for that reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

_PIECES = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
BLOCK_OVERHEAD = 3  # role/type framing around each content block
SEARCH_RESULT_OVERHEAD = 8  # source, title and citation framing of a search_result block


def estimate_tokens(text: str) -> int:
    """Tokens in `text`: ceil(len/4) per word or number, one per symbol; at least 1."""
    total = 0
    for piece in _PIECES.findall(text):
        total += (len(piece) + 3) // 4 if piece[0].isalnum() else 1
    return max(1, total)


def block_tokens(block: Any) -> int:
    """Tokens one prompt piece costs: a text or search_result block, a tool, or a bare string.
    `cache_control` is not content and costs nothing."""
    if isinstance(block, str):
        return estimate_tokens(block) + BLOCK_OVERHEAD
    if not isinstance(block, Mapping):
        return BLOCK_OVERHEAD
    kind = block.get("type")
    if kind == "text":
        return estimate_tokens(str(block.get("text", ""))) + BLOCK_OVERHEAD
    if kind == "search_result":
        inner = sum(block_tokens(part) for part in block.get("content") or [])
        head = estimate_tokens(f"{block.get('source', '')} {block.get('title', '')}")
        return inner + head + SEARCH_RESULT_OVERHEAD
    rest = {k: v for k, v in block.items() if k not in ("cache_control", "role")}
    return estimate_tokens(json.dumps(rest, sort_keys=True)) + BLOCK_OVERHEAD


def prompt_tokens(blocks: Iterable[Any]) -> int:
    return sum(block_tokens(block) for block in blocks)
