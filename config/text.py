"""Text from people, made safe to say back to a channel.

Whatever a person typed and we repeat (an unknown app's name, a reason, a
version we refused) must not ping a crowd when we post it: `@all`, `@here`
and `@channel` in Rocket.Chat, `<!channel>`, `<!here>` and `<@U…>` in Slack.
A word joiner after each `@` and look-alike angle brackets keep the text
readable and inert, on every platform alike.
"""

from __future__ import annotations

WORD_JOINER = "\u2060"
MAX_ECHO = 80


def inert(text: str, limit: int = MAX_ECHO) -> str:
    """`text` as we may repeat it: mentions defused, control characters shown, length capped."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    shown = "".join(c if c.isprintable() else "\N{REPLACEMENT CHARACTER}" for c in shown)
    return (
        shown.replace("@", "@" + WORD_JOINER)
        .replace("<", "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}")
        .replace(">", "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}")
    )
