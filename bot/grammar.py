"""The chat grammar: text in, a `Command` out. Syntax only; names are resolved elsewhere
(`bot/context.py`).

deploy APP VERSION to ENV | deploy ENV | promote APP to ENV | rollback APP in ENV
approve [ID] | reject [ID] [reason] | cancel [ID]
status [ENV|APP|ID] | history ENV [N] | lock ENV|all [reason] | unlock ENV|all | help
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import ClassVar

from config.errors import Refused
from config.text import inert

VERBS = (
    "deploy",
    "promote",
    "rollback",
    "approve",
    "reject",
    "cancel",
    "status",
    "history",
    "lock",
    "unlock",
    "review",
    "clear",
    "report",
    "deploy!",
    "help",
)

APPROVE_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "+1"})
REJECT_REACTIONS = frozenset({"x"})
# The same reactions as other platforms and people spell them: Rocket.Chat's 👍 is
# `thumbsup`, a terminal sends the emoji itself.
REACTION_ALIASES = {
    "✅": "white_check_mark",
    "✔️": "heavy_check_mark",
    "✔": "heavy_check_mark",
    "👍": "+1",
    "thumbsup": "+1",
    "❌": "x",
}


def reaction_name(emoji: str) -> str:
    """The reaction's canonical name: `:thumbsup:`, `👍` and `+1` are one reaction."""
    name = emoji.strip().strip(":")
    return REACTION_ALIASES.get(name, name)


def is_decision(emoji: str) -> bool:
    """Whether the reaction approves or rejects (every other reaction means nothing to us)."""
    return reaction_name(emoji) in APPROVE_REACTIONS | REJECT_REACTIONS


_REQUEST_ID = re.compile(r"^R[0-9A-Z]{6}$")
# Split on spaces and tabs only: a newline stays inside its token, so a
# version like "2.1.0\nnewTag: x" reaches the version check and is refused there.
_SPACES = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class Deploy:
    VERB: ClassVar[str] = "deploy"

    app: str
    version: str
    env: str


@dataclass(frozen=True)
class DeployEnv:
    VERB: ClassVar[str] = "deploy"

    env: str


@dataclass(frozen=True)
class Promote:
    VERB: ClassVar[str] = "promote"

    app: str
    env: str


@dataclass(frozen=True)
class Rollback:
    VERB: ClassVar[str] = "rollback"

    app: str
    env: str


@dataclass(frozen=True)
class Approve:
    VERB: ClassVar[str] = "approve"

    request_id: str | None


@dataclass(frozen=True)
class Reject:
    VERB: ClassVar[str] = "reject"

    request_id: str | None
    reason: str


@dataclass(frozen=True)
class Cancel:
    VERB: ClassVar[str] = "cancel"

    request_id: str | None


@dataclass(frozen=True)
class Status:
    VERB: ClassVar[str] = "status"

    target: str | None


@dataclass(frozen=True)
class History:
    VERB: ClassVar[str] = "history"

    env: str
    count: int


@dataclass(frozen=True)
class Lock:
    VERB: ClassVar[str] = "lock"

    env: str
    reason: str


@dataclass(frozen=True)
class Unlock:
    VERB: ClassVar[str] = "unlock"

    env: str
    reason: str = ""


@dataclass(frozen=True)
class BreakGlass:
    """`deploy! APP VERSION to ENV reason TEXT`: past the gates, during an incident."""

    VERB: ClassVar[str] = "deploy!"

    app: str
    version: str
    env: str
    reason: str


@dataclass(frozen=True)
class Review:
    VERB: ClassVar[str] = "review"

    request_id: str | None


@dataclass(frozen=True)
class Clear:
    """`clear APP VERSION in ENV`: a version that failed verification may deploy again."""

    VERB: ClassVar[str] = "clear"

    app: str
    version: str
    env: str


@dataclass(frozen=True)
class Report:
    """`report ENV [SPAN]`: the delivery figures of ENV over the last SPAN (30d)."""

    VERB: ClassVar[str] = "report"

    env: str
    span: str = "30d"


@dataclass(frozen=True)
class Help:
    VERB: ClassVar[str] = "help"

    verb: str = ""  # `help deploy`: that command's usage


Command = (
    Deploy
    | DeployEnv
    | Promote
    | Rollback
    | Approve
    | Reject
    | Cancel
    | Status
    | History
    | Lock
    | Unlock
    | BreakGlass
    | Review
    | Clear
    | Report
    | Help
)

USAGE = {
    "deploy": "deploy APP VERSION to ENV | deploy ENV",
    "promote": "promote APP to ENV",
    "rollback": "rollback APP in ENV",
    "approve": "approve [ID]",
    "reject": "reject [ID] [reason]",
    "cancel": "cancel [ID]",
    "status": "status [ENV|APP|ID]",
    "history": "history ENV [N]",
    "lock": "lock ENV|all [reason]",
    "unlock": "unlock ENV|all [reason]",
    "deploy!": "deploy! APP VERSION to ENV reason TEXT",
    "review": "review [ID]",
    "clear": "clear APP VERSION in ENV",
    "report": "report ENV [30d|12h|2w]",
    "help": "help [COMMAND]",
}


class GrammarError(Refused):
    def __init__(self, message: str, verb: str | None = None) -> None:
        super().__init__(message, reason="grammar")
        self.verb = verb  # the command it began as, where it began as one


def is_request_id(token: str) -> bool:
    return bool(_REQUEST_ID.match(token))


def verb_of(text: str) -> str | None:
    """The verb the text starts with, if it starts with one."""
    first = _SPACES.split(text.strip(), maxsplit=1)[0].lower()
    return first if first in VERBS else None


def starts_with_verb(text: str) -> bool:
    return verb_of(text) is not None


def slash_text(text: str) -> str:
    """Slack's `/deploy TEXT` reads as `deploy TEXT`, unless TEXT starts with another verb."""
    text = text.strip()
    return text if text and starts_with_verb(text) else f"deploy {text}".strip()


def _usage(verb: str) -> GrammarError:
    return GrammarError(f"usage: {USAGE[verb]}", verb)


def _optional_id(args: list[str]) -> tuple[str | None, list[str]]:
    if args and is_request_id(args[0].upper()):
        return args[0].upper(), args[1:]
    return None, args


def parse(text: str) -> Command:
    """Parse one chat message; raise `GrammarError` with the usage when it does not fit."""
    tokens = [t for t in _SPACES.split(text.strip()) if t]
    if not tokens:
        raise GrammarError(f"say one of: {', '.join(VERBS)}")
    verb, args = tokens[0].lower(), tokens[1:]
    if verb not in VERBS:
        shown = inert(tokens[0], limit=30)
        close = difflib.get_close_matches(verb, VERBS, n=1, cutoff=0.75)
        if close:
            raise GrammarError(f"unknown command '{shown}'; did you mean `{close[0]}`?")
        raise GrammarError(f"unknown command '{shown}'; say one of: {', '.join(VERBS)}")
    if verb == "deploy!":
        # The reason is required: it lands in the commit and on the reviewers' card.
        if len(args) < 6 or args[2].lower() != "to" or args[4].lower() != "reason":
            raise _usage(verb)
        return BreakGlass(args[0], args[1], args[3], " ".join(args[5:]))
    if verb == "review":
        request_id, rest = _optional_id(args)
        if rest:
            raise _usage(verb)
        return Review(request_id)
    if verb == "report":
        if not 1 <= len(args) <= 2 or (
            len(args) == 2 and not re.fullmatch(r"[1-9][0-9]{0,4}[hdw]", args[1].lower())
        ):
            raise _usage(verb)
        return Report(args[0], args[1].lower() if len(args) == 2 else "30d")
    if verb == "clear":
        if len(args) != 4 or args[2].lower() != "in":
            raise _usage(verb)
        return Clear(args[0], args[1], args[3])
    if verb == "deploy":
        if len(args) == 1:
            return DeployEnv(args[0])
        if len(args) == 4 and args[2].lower() == "to":
            return Deploy(args[0], args[1], args[3])
        raise _usage(verb)
    if verb in ("promote", "rollback"):
        joiner = "to" if verb == "promote" else "in"
        if len(args) != 3 or args[1].lower() != joiner:
            raise _usage(verb)
        return Promote(args[0], args[2]) if verb == "promote" else Rollback(args[0], args[2])
    if verb in ("approve", "cancel"):
        request_id, rest = _optional_id(args)
        if rest:
            raise _usage(verb)
        return Approve(request_id) if verb == "approve" else Cancel(request_id)
    if verb == "reject":
        request_id, rest = _optional_id(args)
        return Reject(request_id, " ".join(rest))
    if verb == "status":
        if len(args) > 1:
            raise _usage(verb)
        return Status(args[0] if args else None)
    if verb == "history":
        # ASCII digits only: str.isdigit() also says yes to "²", which int() refuses.
        if not 1 <= len(args) <= 2 or (
            len(args) == 2 and not re.fullmatch(r"0*[1-9][0-9]{0,3}", args[1])
        ):
            raise _usage(verb)
        return History(args[0], min(int(args[1]), 50) if len(args) == 2 else 10)
    if verb == "lock":
        if not args:
            raise _usage(verb)
        return Lock(args[0], " ".join(args[1:]))
    if verb == "unlock":
        if not args:
            raise _usage(verb)
        return Unlock(args[0], " ".join(args[1:]))
    if len(args) == 1 and args[0].lower() in USAGE:
        return Help(args[0].lower())
    if args:
        raise _usage(verb)
    return Help()
