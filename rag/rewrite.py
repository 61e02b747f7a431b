"""Follow-up questions -> standalone questions, from a bounded conversation history.

The LLM rewrites when available; a deterministic rule is the fallback: a question that leans
on the conversation (pronouns, very short) is prefixed with the previous question.
"""

from __future__ import annotations

import logging
import re

from rag.citations import SPACED_MARKER_GROUP
from rag.errors import EndpointError

log = logging.getLogger(__name__)

REFERRING = re.compile(r"\b(he|she|it|they|him|her|them|his|hers|its|their|this|that|these|those|there|then)\b", re.I)
MAX_REWRITE_CHARS = 300
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")

REWRITE_PROMPT = """Rewrite the last question so that it can be understood without the conversation.
Replace pronouns with the names they refer to. Reply with the rewritten question only.

Conversation:
{conversation}

Last question: {question}
Rewritten question:"""


def without_markers(text: str) -> str:
    """Citation markers mean nothing outside their answer: '[1]' in a question reads as a fact to find."""
    return SPACED_MARKER_GROUP.sub("", text)


def bounded(history: list[dict] | None, turns: int) -> list[dict]:
    """The last `turns` question/answer pairs, as role/content messages."""
    messages = [m for m in (history or []) if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
    return messages[-2 * turns :] if turns > 0 else []


def needs_rewrite(question: str, history: list[dict]) -> bool:
    return any(m["role"] == "user" for m in history) and (bool(REFERRING.search(question)) or len(question.split()) <= 3)


def rule_rewrite(question: str, history: list[dict]) -> str:
    previous = [m["content"] for m in history if m["role"] == "user"]
    return f"{previous[-1]} {question}" if previous else question


def is_one_question(text: str) -> bool:
    """A usable rewrite is one question. A small model often copies the previous answer instead
    (and adds to it): searching for that text finds the answer's own claims, not the question's."""
    return 5 < len(text) <= MAX_REWRITE_CHARS and text.endswith("?") and not SENTENCE_BREAK.search(text[:-1])


def rewrite_question(question: str, history: list[dict], llm=None) -> tuple[str, str]:
    """(standalone question, how: 'none' | 'llm' | 'rules')."""
    if not needs_rewrite(question, history):
        return question, "none"
    if llm is not None:
        conversation = "\n".join(f"{m['role']}: {without_markers(m['content'])[:500]}" for m in history)
        try:
            text = llm.complete(
                [{"role": "user", "content": REWRITE_PROMPT.format(conversation=conversation, question=question)}],
                max_tokens=60,
                temperature=0.0,
            )
        except EndpointError as exc:
            log.warning("question rewrite fell back to rules: %s", exc)
        else:
            text = without_markers(text).strip().strip('"').splitlines()[0].strip() if text.strip() else ""
            if is_one_question(text):
                # Keep the original words too: a small model's rewrite may lose them.
                return f"{text} {question}" if text.lower() != question.lower() else text, "llm"
    return rule_rewrite(question, history), "rules"
