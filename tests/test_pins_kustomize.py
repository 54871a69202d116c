"""Kustomize pins change only the bytes of the version, and read what they write."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import Redis

from config.errors import PinAmbiguous, PinError, PinNotFound
from config.policy import Pin
from tests.conftest import Chat, Remote, run_worker
from workers.pins import read_version, write_version
from workers.state.request import RequestState
from workers.state.store import RequestStore

IMAGE = Pin(file="k.yml", kustomize_image="bespinian/awesome-image")
LITERAL = Pin(file="k.yml", configmap_literal="awesome-config/appVersion")

SEED = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: other/image
    newTag: 9.9.9
  - name: bespinian/awesome-image  # the app
    newTag: 1.0.0
configMapGenerator:
  - name: awesome-config
    literals:
      - appTitle=Something awesome!
      - appVersion=1.0.0
"""


def test_reads_the_image_tag_and_the_literal() -> None:
    assert read_version(SEED, IMAGE) == "1.0.0"
    assert read_version(SEED, LITERAL) == "1.0.0"


def test_writing_changes_only_the_version_bytes() -> None:
    after = write_version(write_version(SEED, IMAGE, "2.0.0"), LITERAL, "2.0.0")
    assert after == SEED.replace("newTag: 1.0.0", "newTag: 2.0.0").replace(
        "appVersion=1.0.0", "appVersion=2.0.0"
    )


def test_a_version_yaml_would_read_as_a_number_is_quoted() -> None:
    after = write_version(SEED, IMAGE, "1.10")
    assert 'newTag: "1.10"\n' in after
    assert read_version(after, IMAGE) == "1.10"


def test_a_quoted_tag_keeps_its_quotes() -> None:
    text = SEED.replace("newTag: 1.0.0", "newTag: '1.0.0'")
    assert "newTag: '2.0.0'" in write_version(text, IMAGE, "2.0.0")


def test_a_missing_image_names_the_file_and_what_was_found() -> None:
    pin = Pin(file="k.yml", kustomize_image="nope/image")
    with pytest.raises(PinNotFound, match=r"k\.yml: no images entry named 'nope/image' \(found: "):
        read_version(SEED, pin)


def test_an_image_listed_twice_is_ambiguous() -> None:
    text = SEED + "---\nimages:\n  - name: bespinian/awesome-image\n    newTag: 3.0.0\n"
    with pytest.raises(PinAmbiguous, match="appears 2 times"):
        read_version(text, IMAGE)


def test_a_missing_literal_lists_the_keys_that_exist() -> None:
    pin = Pin(file="k.yml", configmap_literal="awesome-config/dbHost")
    with pytest.raises(PinNotFound, match=r"found: appTitle, appVersion"):
        read_version(SEED, pin)


def test_a_missing_new_tag_reads_empty_and_is_added_under_the_name() -> None:
    text = SEED.replace("    newTag: 1.0.0\n", "")
    assert read_version(text, IMAGE) == ""
    assert write_version(text, IMAGE, "2.0.0") == SEED.replace("1.0.0\n", "2.0.0\n", 1)


def test_a_missing_new_tag_is_added_with_crlf_and_quoted_when_needed() -> None:
    text = "images:\r\n- name: bespinian/awesome-image\r\n  newName: ghcr.io/b/awesome\r\n"
    assert write_version(text, IMAGE, "1.10") == (
        'images:\r\n- name: bespinian/awesome-image\r\n  newTag: "1.10"\r\n'
        "  newName: ghcr.io/b/awesome\r\n"
    )


def test_a_flow_style_entry_without_new_tag_cannot_be_extended() -> None:
    with pytest.raises(PinNotFound, match="has no newTag; add it by hand"):
        read_version("images: [{name: bespinian/awesome-image}]\n", IMAGE)


def test_the_digest_can_be_pinned_instead_of_the_tag() -> None:
    pin = Pin(file="k.yml", kustomize_image="bespinian/awesome-image", part="digest")
    old, new = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    text = SEED.replace("newTag: 1.0.0", f"digest: {old}")
    assert read_version(text, pin) == old
    assert f"digest: {new}" in write_version(text, pin, new)


def test_an_entry_with_new_name_is_found_by_its_name() -> None:
    text = SEED.replace(
        "  - name: bespinian/awesome-image  # the app\n",
        "  - name: bespinian/awesome-image  # the app\n    newName: ghcr.io/b/x\n",
    )
    assert read_version(text, IMAGE) == "1.0.0"


def test_a_secret_generator_is_refused() -> None:
    text = SEED.replace("configMapGenerator", "secretGenerator")
    with pytest.raises(PinError, match="is a secretGenerator; releasegate does not edit secrets"):
        read_version(text, LITERAL)


def test_broken_yaml_is_a_pin_error() -> None:
    with pytest.raises(PinError, match="not valid YAML"):
        read_version("images: [", IMAGE)


versions = st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(-rc[0-9]{1,2})?", fullmatch=True)
comments = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


@given(
    old=versions,
    new=versions,
    indent=st.integers(min_value=1, max_value=6),
    newline=st.sampled_from(["\n", "\r\n"]),
    trailing=st.booleans(),
    quote=st.sampled_from(["", "'", '"']),
    comment=comments,
)
def test_only_the_version_changes_in_any_layout(
    old: str, new: str, indent: int, newline: str, trailing: bool, quote: str, comment: str
) -> None:
    pad = " " * indent

    def render(version: str) -> str:
        lines = [
            f"# {comment}",
            "images:",
            f"{pad}- name: bespinian/awesome-image",
            f"{pad}  newTag: {quote}{version}{quote}  # {comment}",
            "",
            "configMapGenerator:",
            f"{pad}- name: awesome-config",
            f"{pad}  literals:",
            f"{pad}  {pad}- {quote}appVersion={version}{quote}",
        ]
        return newline.join(lines) + (newline if trailing else "")

    before = render(old)
    after = write_version(write_version(before, IMAGE, new), LITERAL, new)
    assert after == render(new)
    assert read_version(after, IMAGE) == new
    assert read_version(after, LITERAL) == new


def test_a_deploy_to_a_digest_pin_lands_and_a_refusal_names_the_rule_that_refused(
    chat: Chat, redis: Redis, origin: Remote, policy_file: Path
) -> None:
    """`part: digest` pins take `sha256:…` (the version check allows its `:`); a version the
    conservative character set refuses says that set, not the app's pattern."""
    from config.policy import parse_policy

    text = policy_file.read_text() + (
        "  by-digest:\n    versions: '^sha256:[0-9a-f]{64}$'\n    pins:\n      prd:\n"
        "        - {file: env/prd/kustomization.yml, kustomize_image: bespinian/awesome-image,"
        " part: digest}\n"
    )
    policy_file.write_text(text)
    chat.conversation.ctx.policy = parse_policy(text)
    digest = "sha256:" + "ab" * 32
    asked = chat.say("alice", "deploy-prd", f"deploy by-digest {digest} to prd")
    assert asked.request_id, asked.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(str(asked.request_id)) is RequestState.PUSHED
    assert f"digest: {digest}".encode() in origin.file("env/prd/kustomization.yml")
    refused = chat.say("alice", "deploy-prd", "deploy by-digest sha256:a;b to prd")
    assert "letters, digits and . _ + - :" in refused.text
