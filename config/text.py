"""Text from outside, made inert before we say it in a channel.

Whatever we repeat and did not write ourselves (a person's words, a reason, a version we
refused, a reconciler's or a forge's message, a commit's subject, author or trailers, a
pinned file's lines in a diff) must not ping a crowd, become a link or close our own
markup when we post it:

- mentions: `@all`, `@here` (Rocket.Chat), `<!channel>`, `<!here>`, `<@U…>` (Slack) get a
  word joiner after an `@` that starts a name, and look-alike angle brackets;
- links: `https://…` (both), `<url|text>` (Slack), `[text](url)` (Rocket.Chat) get a word
  joiner after the scheme's colon and between `]` and `(`;
- control characters are shown, not sent; the length is capped.

No run of three backticks survives (it would open or close a code block), so
`inert_block`, for text we put inside a ``` fence, is the same with line breaks kept.
"""

from __future__ import annotations

import re

WORD_JOINER = "\u2060"
MAX_ECHO = 80
FENCE = "```"


def inert(text: str, limit: int = MAX_ECHO) -> str:
    """`text` as we may repeat it on one line: mentions and links defused, control characters
    shown, length capped."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    shown = "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in shown)
    return _defused(shown)


def inert_block(text: str, limit: int = 8000) -> str:
    """`text` as we may show it inside a ``` fence: line breaks kept, everything else as
    `inert` (so no ``` is left that could close the fence)."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    shown = "".join(
        c if c.isprintable() or c == "\n" else "\N{REPLACEMENT CHARACTER}" for c in shown
    )
    return _defused(shown)


def _defused(text: str) -> str:
    # A mention is `@` before a name: `@all`, `@carol` (a diff's `@@` hunk marks are not).
    text = re.sub(r"@(?=\w)", "@" + WORD_JOINER, text)
    return (
        text.replace("<", "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}")
        .replace(">", "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}")
        .replace("://", ":" + WORD_JOINER + "//")
        .replace("](", "]" + WORD_JOINER + "(")
        .replace("``", "`" + WORD_JOINER + "`")
    )
