"""The chat grammar: syntax only, every verb of DESIGN.md."""

from __future__ import annotations

import pytest

from bot.grammar import (
    VERBS,
    Approve,
    Cancel,
    Deploy,
    DeployEnv,
    GrammarError,
    Help,
    History,
    Lock,
    Promote,
    Reject,
    Rollback,
    Status,
    Unlock,
    parse,
    slash_text,
)
from tests.conftest import Chat


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("deploy awesome 2.1.1 to prd", Deploy("awesome", "2.1.1", "prd")),
        ("DEPLOY awesome 2.1.1 TO prd", Deploy("awesome", "2.1.1", "prd")),
        ("deploy production", DeployEnv("production")),
        ("promote awesome to prd", Promote("awesome", "prd")),
        ("rollback awesome in prd", Rollback("awesome", "prd")),
        ("approve", Approve(None)),
        ("approve rabcdef", Approve("RABCDEF")),
        ("reject", Reject(None, "")),
        ("reject RABCDEF not today", Reject("RABCDEF", "not today")),
        ("reject broken on int", Reject(None, "broken on int")),
        ("cancel RABCDEF", Cancel("RABCDEF")),
        ("status", Status(None)),
        ("status prd", Status("prd")),
        ("history prd", History("prd", 10)),
        ("history prd 3", History("prd", 3)),
        ("lock prd incident 42", Lock("prd", "incident 42")),
        ("unlock prd", Unlock("prd")),
        ("unlock prd because done", Unlock("prd", "because done")),
        ("history int 3", History("int", 3)),
        ("help", Help()),
        ("  deploy\tawesome  2.1.1 to   prd ", Deploy("awesome", "2.1.1", "prd")),
    ],
)
def test_each_verb_parses(text: str, command: object) -> None:
    assert parse(text) == command


def test_unknown_verb_lists_the_valid_ones() -> None:
    with pytest.raises(GrammarError) as err:
        parse("yeet awesome")
    assert "unknown command 'yeet'" in str(err.value)
    for verb in VERBS:
        assert verb in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "deploy",
        "deploy awesome 2.1.1 prd",
        "deploy awesome 2.1.1 in prd",
        "promote awesome prd",
        "rollback awesome to prd",
        "approve RABCDEF extra",
        "history",
        "history prd many",
        "history prd ²",
        "history prd ١٢",
        "history int 0",
        "history int 00",
        "lock",
        "unlock",
        "help me",
        "status a b",
    ],
)
def test_malformed_commands_answer_with_their_usage(text: str) -> None:
    with pytest.raises(GrammarError, match="usage: "):
        parse(text)


def test_a_newline_stays_inside_the_version_so_the_version_check_sees_it() -> None:
    assert parse("deploy awesome 2.1.0\nnewTag:x to prd") == Deploy(
        "awesome", "2.1.0\nnewTag:x", "prd"
    )


def test_empty_text_is_refused() -> None:
    with pytest.raises(GrammarError):
        parse("   ")


@pytest.mark.parametrize(
    ("text", "read_as"),
    [
        ("awesome 2.1.0 to prd", "deploy awesome 2.1.0 to prd"),
        ("production", "deploy production"),
        ("status", "status"),
        ("approve RABCDEF", "approve RABCDEF"),
        ("", "deploy"),
    ],
)
def test_slash_command_text_reads_as_deploy_unless_it_starts_with_a_verb(
    text: str, read_as: str
) -> None:
    assert slash_text(text) == read_as


def test_help_with_a_command_gives_its_usage() -> None:
    from bot.grammar import Help
    from bot.messages import help_text

    assert parse("help deploy") == Help("deploy")
    assert help_text("deploy") == "usage: deploy APP VERSION to ENV | deploy ENV"


def test_a_misspelt_app_or_environment_gets_a_did_you_mean(chat: Chat) -> None:
    said = chat.say("alice", "deploy-int", "deploy awsome 2.1.0 to int").text
    assert said.startswith("unknown app 'awsome'; did you mean `awesome`? known apps: "), said
    said = chat.say("alice", "deploy-int", "deploy awesome 2.1.0 to intt").text
    assert "did you mean `int`?" in said, said
