"""The signature gate, against Debian's `docker-registry`: a version is filed, and lands,
only when a cosign signature of its digest (in cosign's own layout, made here with keys the
test generates) verifies with the environment's key. Unsigned, signed by another key, a
signature of another digest or of another image: each refused, nothing committed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from redis import Redis

from bot.conversation import Conversation
from config.policy import parse_policy
from config.settings import Settings
from tests.conftest import Chat, Remote, outbox, run_worker
from tests.registry import Registry, start_registry
from workers.git.mirrors import Mirrors
from workers.state.request import RequestState
from workers.state.store import RequestStore

IMAGE = "bespinian/awesome-image"
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def sign(key: Key, payload: bytes) -> bytes:
    """What cosign makes: ECDSA P-256 or RSA (PKCS#1 v1.5) over SHA-256, or Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(payload)


def payload(reference: str, digest: str) -> bytes:
    """cosign's simple signing payload, as `cosign sign` writes it."""
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()


KEYS: dict[str, Callable[[], Key]] = {
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


def public_pem(key: Key, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    started = start_registry(tmp_path / "registry")
    yield started
    started.stop()


def gated_chat(
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    key_file: Path,
    more: str = "",
) -> Chat:
    text = policy_file.read_text()
    text = text.replace(
        "  awesome:\n", f"  awesome:\n    artifact: {{image: {registry.host}/{IMAGE}}}\n", 1
    )
    text = text.replace(
        "    approval_ttl: 2h\n",
        f"    approval_ttl: 2h\n    gates: {{signature: {{cosign_key: {key_file}}}}}\n{more}",
        1,
    )
    policy_file.write_text(text)
    policy = parse_policy(text)
    return Chat(Conversation(policy, redis, Mirrors.of(policy, settings.workdir, freshness=0)))


@pytest.mark.parametrize("kind", list(KEYS))
def test_a_version_signed_with_the_environments_key_is_filed_and_lands(
    kind: str,
    tmp_path: Path,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    origin: Remote,
) -> None:
    key = KEYS[kind]()
    chat = gated_chat(policy_file, redis, settings, registry, public_pem(key, tmp_path / "k.pub"))
    digest = registry.push(IMAGE, "2.1.0")
    signed = payload(f"{registry.host}/{IMAGE}", digest)
    registry.push_signature(IMAGE, digest, [(signed, sign(key, signed))])
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert reply.request_id, reply.text
    assert "✓ awesome 2.1.0 signed by key " in reply.text
    chat.say("carol", "deploy-prd", "approve")
    run_worker(redis)
    assert RequestStore(redis).state(reply.request_id) is RequestState.PUSHED
    assert origin.count() == 2


def test_unsigned_another_keys_another_digests_and_another_images_signatures_are_refused(
    tmp_path: Path,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    origin: Remote,
) -> None:
    ours, theirs = KEYS["ecdsa-p256"](), KEYS["ecdsa-p256"]()
    chat = gated_chat(policy_file, redis, settings, registry, public_pem(ours, tmp_path / "k.pub"))
    reference = f"{registry.host}/{IMAGE}"
    unsigned = registry.push(IMAGE, "2.1.0")
    said = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    assert said.reason == "unsigned", said.text
    assert "is not signed" in said.text

    by_them = registry.push(IMAGE, "2.2.0")
    body = payload(reference, by_them)
    registry.push_signature(IMAGE, by_them, [(body, sign(theirs, body))])
    said = chat.say("alice", "deploy-prd", "deploy awesome 2.2.0 to prd")
    assert said.reason == "unsigned"
    assert "signatures by another key" in said.text

    moved = registry.push(IMAGE, "2.3.0")
    body = payload(reference, unsigned)  # our key, but of another digest
    registry.push_signature(IMAGE, moved, [(body, sign(ours, body))])
    said = chat.say("alice", "deploy-prd", "deploy awesome 2.3.0 to prd")
    assert "a signature of another digest" in said.text, said.text

    elsewhere = registry.push(IMAGE, "2.4.0")
    body = payload(f"{registry.host}/someone/else", elsewhere)
    registry.push_signature(IMAGE, elsewhere, [(body, sign(ours, body))])
    said = chat.say("alice", "deploy-prd", "deploy awesome 2.4.0 to prd")
    assert "a signature of another image" in said.text, said.text
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1


def test_a_version_whose_signature_is_gone_by_the_commit_is_not_committed(
    tmp_path: Path,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    origin: Remote,
) -> None:
    """The worker verifies again, asked now: a signature replaced after the approval (here by
    one of another key) stops the commit, and the thread says why."""
    key = KEYS["ecdsa-p256"]()
    chat = gated_chat(policy_file, redis, settings, registry, public_pem(key, tmp_path / "k.pub"))
    digest = registry.push(IMAGE, "2.1.0")
    body = payload(f"{registry.host}/{IMAGE}", digest)
    registry.push_signature(IMAGE, digest, [(body, sign(key, body))])
    reply = chat.say("alice", "deploy-prd", "deploy awesome 2.1.0 to prd")
    chat.say("carol", "deploy-prd", "approve")
    registry.push_signature(IMAGE, digest, [(body, sign(KEYS["ecdsa-p256"](), body))])
    run_worker(redis)
    assert RequestStore(redis).state(str(reply.request_id)) is RequestState.FAILED
    [told] = outbox(redis)
    assert "has no signature that verifies with key" in told, told
    assert origin.count() == 1


def test_break_glass_of_an_unsigned_image_is_refused(
    tmp_path: Path,
    policy_file: Path,
    redis: Redis,
    settings: Settings,
    registry: Registry,
    origin: Remote,
) -> None:
    """Break-glass skips approvals and the other gates, never the signature."""
    key = KEYS["ecdsa-p256"]()
    oncall = "    break_glass: ['shell:alice']\n"
    chat = gated_chat(
        policy_file, redis, settings, registry, public_pem(key, tmp_path / "k.pub"), oncall
    )
    registry.push(IMAGE, "2.1.0")
    said = chat.say("alice", "deploy-prd", "deploy! awesome 2.1.0 to prd reason INC-42")
    assert said.reason == "unsigned", said.text
    assert redis.keys("releasegate:request:*") == []
    assert origin.count() == 1
