"""The signature gate: the approved digest must carry a cosign signature that verifies with
the environment's key, when a request is filed and again right before its commit.

A signature is cosign's (specs/SIGNATURE_SPEC.md): at the image's `sha256-HEX.sig` tag, a
simple signing payload whose `critical.image.docker-manifest-digest` is the approved digest,
whose `critical.identity.docker-reference` names the image, and whose `critical.type` is
cosign's; its signature (base64, in the layer's annotation) is made over the payload's bytes
with SHA-256: ECDSA (P-256 as cosign makes them), RSA (PKCS#1 v1.5) or Ed25519. The
`cryptography` package does the crypto. Keyless signatures (Fulcio, Rekor) are not
supported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from config.artifact import Artifact
from config.errors import ReleasegateError
from config.gates import SignatureGate
from workers.artifacts.registry import Registry, RegistryError, split_name

COSIGN_TYPE = "cosign container image signature"


class Unsigned(ReleasegateError):
    """No signature of the approved digest verifies with the environment's key."""


@dataclass(frozen=True)
class PublicKey:
    key: Any
    id: str  # the first 12 hex of the SHA-256 of its DER (SubjectPublicKeyInfo)

    @classmethod
    def load(cls, gate: SignatureGate) -> PublicKey:
        try:
            data = gate.cosign_key.read_bytes()
            key = serialization.load_pem_public_key(data)
        except (OSError, ValueError) as exc:
            raise Unsigned(
                f"the signature key {gate.cosign_key} cannot be read as a PEM public key: {exc}"
            ) from exc
        if not isinstance(
            key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
        ):
            raise Unsigned(f"{gate.cosign_key} is not an ECDSA, RSA or Ed25519 public key")
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(key, hashlib.sha256(der).hexdigest()[:12])

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True


def _reference(payload: dict[str, Any]) -> str:
    """The image a payload names, without its tag or digest."""
    critical = payload.get("critical") or {}
    ref = str((critical.get("identity") or {}).get("docker-reference", ""))
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return ref.rsplit(":", 1)[0] if ":" in last else ref


def _digest(payload: dict[str, Any]) -> str:
    image = (payload.get("critical") or {}).get("image") or {}
    # cosign writes `docker-manifest-digest`; the format it comes from spells it capitalised.
    return str(image.get("docker-manifest-digest") or image.get("Docker-manifest-digest") or "")


def verify(registry: Registry, artifact: Artifact, digest: str, gate: SignatureGate) -> str:
    """The key id that signed `digest` of `artifact`; raises `Unsigned` saying what was found
    instead (no signature, another key's, another digest's, another image's)."""
    name = artifact.oci_name
    if name is None:
        raise Unsigned(f"{artifact.describe()} is not an OCI artifact: no signature to verify")
    key = PublicKey.load(gate)
    try:
        found = registry.signatures(split_name(name)[1], digest)
    except RegistryError as exc:
        raise Unsigned(f"its signatures cannot be read: {exc}") from exc
    if not found:
        raise Unsigned(f"{name}@{digest[:19]}… is not signed (no {digest[:14]}….sig)")
    seen: set[str] = set()
    for raw, signature in found:
        try:
            payload = json.loads(raw)
            signed = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            seen.add("a signature that is not cosign's")
            continue
        if (
            not isinstance(payload, dict)
            or (payload.get("critical") or {}).get("type") != COSIGN_TYPE
        ):
            seen.add("a signature that is not cosign's")
        elif not key.verifies(signed, raw):
            seen.add(f"signatures by another key than {key.id}")
        elif _digest(payload) != digest:
            seen.add(f"a signature of another digest ({_digest(payload)[:19]}…)")
        elif _reference(payload) != name:
            seen.add(f"a signature of another image ({_reference(payload)[:80]})")
        else:
            return key.id
    return _refuse(name, digest, key, sorted(seen))


def _refuse(name: str, digest: str, key: PublicKey, seen: list[str]) -> str:
    raise Unsigned(
        f"{name}@{digest[:19]}… has no signature that verifies with key {key.id}; "
        f"found {', '.join(seen)}"
    )
