"""`releasegate report` and the chat's `report`: the delivery figures from Git alone, exact on
a remote whose history was written at known times, in every format."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, git, plain_policy, single_policy
from tests.fake_ci import FakeCI
from tests.test_cli import releasegate, settings_env
from workers.git.mirrors import Mirrors
from workers.records import figures
from workers.records.picture import weekly
from workers.records.report import read_records, report

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SOURCE_SHA = "a" * 40


def at(days: int, hours: float) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def commit(work: Path, message: str, filed: datetime, landed: datetime) -> None:
    """A commit as releasegate writes one: filed at its author date, landed at its commit
    date (only the message matters to the report; the file changes to keep it non-empty)."""
    (work / "log.txt").write_text(message)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "releasegate",
        "GIT_AUTHOR_EMAIL": "rg@acme.example",
        "GIT_COMMITTER_NAME": "releasegate",
        "GIT_COMMITTER_EMAIL": "rg@acme.example",
        "GIT_AUTHOR_DATE": f"@{int(filed.timestamp())} +0000",
        "GIT_COMMITTER_DATE": f"@{int(landed.timestamp())} +0000",
    }
    subprocess.run(["git", "add", "log.txt"], cwd=work, check=True)
    subprocess.run(
        ["git", "commit", "-qF", "-"], cwd=work, input=message.encode(), env=env, check=True
    )


def deploy(request: str, lines: list[str], kind: str = "", more: str = "") -> str:
    subject = "Deploy" if kind != "rollback" else "Roll back"
    trailers = [f"Releasegate-Request: {request}"]
    if kind:
        trailers.append(f"Releasegate-Kind: {kind}")
    trailers.append("Requested-by: shell:alice")
    if more:
        trailers.append(more)
    return f"{subject} …\n\n" + "\n".join(lines) + "\n\n" + "\n".join(trailers) + "\n"


@pytest.fixture
def history(remote: Path, tmp_path: Path) -> Path:
    """prd and int over November 2026, at known times (besides the remote's first commit)."""
    work = tmp_path / "crafted"
    git("clone", "--quiet", str(remote), str(work))
    awesome = "awesome: {} -> {} (prd)"
    commit(work, "A person's own change, not releasegate's\n", at(0, 1), at(0, 1))
    # R1: lead 30m from filing; its source commit was made 2h before it landed.
    r1 = deploy(
        "R1AAAAA", [awesome.format("2.0.0", "2.1.0")], more=f"Source-Revision: {SOURCE_SHA}"
    )
    commit(work, r1, at(1, 10), at(1, 10.5))
    # R2, lead 10m, rolled back by releasegate 30m later (Rollback-Of): failed, restored.
    commit(work, deploy("R2AAAAA", [awesome.format("2.1.0", "2.2.0")]), at(3, 9), at(3, 9 + 1 / 6))
    rollback = deploy(
        "R3AAAAA",
        [awesome.format("2.2.0", "2.1.0")],
        "rollback",
        "Rollback-Of: R2AAAAA\nReason: verification failed: error-rate 0.3 ≥ 0.05",
    )
    commit(work, rollback, at(3, 9 + 1 / 6), at(3, 9 + 4 / 6))
    # R4, lead 1h, rolled back by a person 2h later: failed, restored in 2h.
    commit(work, deploy("R4AAAAA", [awesome.format("2.1.0", "2.3.0")]), at(5, 12), at(5, 13))
    commit(
        work,
        deploy("R5AAAAA", [awesome.format("2.3.0", "2.1.0")], "rollback"),
        at(5, 14),
        at(5, 15),
    )
    # R6 in int, lead 5m.
    commit(work, deploy("R6AAAAA", ["awesome: 2.3.0 -> 2.4.0 (int)"]), at(6, 8), at(6, 8 + 1 / 12))
    # R7, a train to prd, lead 20m, never undone.
    train = [awesome.format("2.1.0", "2.4.0"), "sidecar: 1.0.0 -> 1.1.0 (prd)"]
    commit(work, deploy("R7AAAAA", train, "train"), at(10, 16), at(10, 16 + 1 / 3))
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    return remote


def test_the_figures_of_crafted_history_are_exact(history: Path, tmp_path: Path) -> None:
    policy = parse_policy(plain_policy(history))
    mirrors = Mirrors.of(policy, tmp_path / "m", freshness=0)
    since, until = T0, T0 + timedelta(days=29)
    text = report(policy, mirrors, since, until, form="json", source_time=lambda app, sha: None)
    found = {(f["env"], f["app"]): f for f in json.loads(text)["figures"]}
    prd = found[("prd", "awesome")]
    assert prd["deploys"] == 4
    assert prd["failures"] == 2
    assert prd["change_failure_rate"] == 0.5
    assert prd["lead_time"] == 25 * 60  # the median of 30m, 10m, 1h and 20m
    assert prd["time_to_restore"] == 75 * 60  # the median of 30m and 2h
    assert prd["per_day"] == round(4 / 29, 3)
    assert found[("prd", "sidecar")]["deploys"] == 1
    assert found[("prd", "sidecar")]["change_failure_rate"] == 0
    assert found[("int", "awesome")]["lead_time"] == 5 * 60
    # A narrower window counts only what landed in it; the rollbacks after it still count.
    text = report(policy, mirrors, at(3, 0), at(4, 0), form="json", source_time=lambda a, s: None)
    [only] = json.loads(text)["figures"]
    assert (only["deploys"], only["failures"], only["time_to_restore"]) == (1, 1, 30 * 60)


def test_lead_time_counts_from_the_source_commit_where_the_forge_says_when(
    history: Path, tmp_path: Path
) -> None:
    ci = FakeCI()
    ci.commits[SOURCE_SHA] = (at(1, 8.5)).isoformat().replace("+00:00", "Z")
    try:
        text = plain_policy(history) + (
            f"forges:\n  - {{host: '{ci.host}', kind: github, api_url: 'http://{ci.host}/api/v3'}}\n"
        )
        text = text.replace(
            "    versions: semver\n",
            f"    versions: semver\n    source: http://{ci.host}/acme/awesome\n",
            1,
        )
        policy = parse_policy(text)
        mirrors = Mirrors.of(policy, tmp_path / "m", freshness=0)
        out = report(policy, mirrors, T0, at(2, 0), env="prd", form="json")
    finally:
        ci.close()
    [r1] = json.loads(out)["figures"]
    assert r1["lead_time"] == 2 * 3600  # from 08:30, when the source commit was made
    assert r1["lead_from_source"] == 1
    assert (f"/api/v3/repos/acme/awesome/commits/{SOURCE_SHA}", "") in ci.asked


def test_report_on_the_command_line_in_table_csv_and_json(
    history: Path, tmp_path: Path, policy_file: Path, redis_server: object
) -> None:
    env = settings_env(policy_file, "redis://unused", tmp_path / "w")
    # The crafted history is a month old: ask far enough back, for one app.
    days = (datetime.now(UTC) - T0).days + 1
    table = releasegate("report", "--since", f"{days}d", "--app", "awesome", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("delivery from ")
    assert lines[1].split() == [
        "env",
        "app",
        "deploys",
        "per",
        "day",
        "lead",
        "time",
        "change",
        "failure",
        "rate",
        "time",
        "to",
        "restore",
    ]
    [prd] = [line for line in lines if line.startswith("prd ")]
    assert prd.split()[:3] == ["prd", "awesome", "4"]
    assert "25m 00s" in prd
    assert "50%" in prd
    assert "1h 15m" in prd
    done = releasegate("report", "--since", f"{days}d", "--format", "csv", env=env)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {(r["env"], r["app"], r["deploys"]) for r in rows} == {
        ("int", "awesome", "1"),
        ("prd", "awesome", "4"),
        ("prd", "sidecar", "1"),
    }
    done = releasegate("report", "--since", f"{days}d", "--format", "json", "--env", "int", env=env)
    assert [f["app"] for f in json.loads(done.stdout)["figures"]] == ["awesome"]
    refused = releasegate("report", "--since", "forever", env=env)
    assert refused.returncode == 2
    assert "--since: 'forever' is not a span like 30d" in refused.stderr
    refused = releasegate("report", "--env", "staging", env=env)
    assert "--env: the policy has no 'staging'" in refused.stderr


def test_report_in_chat_answers_the_same_table(
    history: Path, tmp_path: Path, redis: Redis, settings: Settings
) -> None:
    policy = parse_policy(single_policy(history))
    chat = Chat(Conversation(policy, redis, Mirrors.of(policy, tmp_path / "bot", freshness=0)))
    chat.conversation.ctx.clock = lambda: T0 + timedelta(days=29)
    answer = chat.say("bob", "deploy-prd", "report prd 29d")
    mirrors = Mirrors.of(policy, tmp_path / "m", freshness=0)
    table = report(policy, mirrors, T0, T0 + timedelta(days=29), env="prd")
    assert answer.ok
    assert answer.text == f"```\n{table}\n```"
    assert "prd  awesome  4" in answer.text
    assert not chat.say("bob", "deploy-prd", "report prd forever").ok


def test_the_window_is_said_in_days_hours_or_weeks() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert figures.window("30d", now) == now - timedelta(days=30)
    assert figures.window("12h", now) == now - timedelta(hours=12)
    assert figures.window("2w", now) == now - timedelta(days=14)
    for bad in ("30", "d", "-1d", "1y", "0d"):
        with pytest.raises(ValueError, match="is not a span"):
            figures.window(bad, now)


def test_report_draws_deploys_per_week_and_lead_time_into_a_png(
    history: Path, tmp_path: Path
) -> None:
    policy = parse_policy(plain_policy(history))
    mirrors = Mirrors.of(policy, tmp_path / "m", freshness=0)
    records = read_records(policy, mirrors, T0)
    rows = weekly(records, T0, T0 + timedelta(days=29), lambda app, sha: None, env="prd")
    # Weeks from Monday: R1, R2 and R4 in the week of Nov 2; R7's two apps in the next.
    assert [(w.strftime("%m-%d"), n, lead) for w, n, lead in rows] == [
        ("10-26", 0, None),
        ("11-02", 3, 0.5),
        ("11-09", 2, pytest.approx(1 / 3)),
        ("11-16", 0, None),
        ("11-23", 0, None),
    ]
    days = (datetime.now(UTC) - T0).days + 1
    env = settings_env(tmp_path / "policy.yaml", "redis://unused", tmp_path / "w")
    (tmp_path / "policy.yaml").write_text(plain_policy(history))
    png = tmp_path / "delivery.png"
    done = releasegate("report", "--since", f"{days}d", "--png", str(png), env=env)
    assert done.returncode == 0, done.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (800, 500)
