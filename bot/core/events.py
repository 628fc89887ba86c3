"""Typed events of a streamed answer: provisional text while composing, then the checked Answer itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.core.models import Answer


@dataclass(frozen=True)
class TextEvent:
    """Provisional answer text: a `token` of a chat model, or a whole `sentence` line (extractive answers).

    The final Answer holds only what verified; streamed text may be withdrawn by it."""

    kind: Literal["token", "sentence"]
    text: str


@dataclass(frozen=True)
class FinalEvent:
    """The last event of every stream: the Answer object surfaces show, check and store."""

    answer: Answer


AnswerEvent = TextEvent | FinalEvent
