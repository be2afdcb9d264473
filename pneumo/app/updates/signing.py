"""Ed25519 signatures of model files (`pneumo keys generate`, `pneumo model sign`, install).

A signature file ``MODEL.onnx.sig`` is JSON: the algorithm, the signed file's sha256, the
signing key's id (sha256 of the raw public key, first 16 hex digits) and the base64
signature over the model file's bytes. The release public key ships inside the app
(``pneumo/app/keys/release.pub``); the matching private key never enters the repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pneumo.app import PACKAGE_DIR, bounded_json

log = logging.getLogger(__name__)

RELEASE_PUBLIC_KEY = PACKAGE_DIR / "keys" / "release.pub"
"""The project's release public key (PEM), trusted by default when installing a model."""

PRIVATE_NAME = "pneumo-signing.key"
PUBLIC_NAME = "pneumo-signing.pub"
SIG_SUFFIX = ".sig"
ALGORITHM = "ed25519"
MAX_SIG_BYTES = 64 * 1024
"""Bytes of a signature file (ours are under 300)."""


class SignatureError(Exception):
    """A model file is unsigned, tampered with, or signed by a key that is not trusted."""


@dataclass(frozen=True)
class Verified:
    """A signature that checked out: who signed (key id) and what (sha256)."""

    key_id: str
    sha256: str


def signature_path(model: str | Path) -> Path:
    """Where a model's signature lies: MODEL.onnx -> MODEL.onnx.sig."""
    model = Path(model)
    return model.with_name(model.name + SIG_SUFFIX)


_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw 32-byte key follows."""
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
"""DER prefix of an unencrypted Ed25519 PKCS#8 private key (RFC 8410); the 32-byte seed follows."""


def _pem(kind: str, der: bytes) -> bytes:
    """DER bytes wrapped as PEM."""
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def _der(pem: bytes, kind: str, prefix: bytes, where: str | Path) -> bytes:
    """The 32 raw key bytes of an Ed25519 PEM file; ValueError if it is not one."""
    text = pem.decode("ascii", errors="replace")
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    if begin not in text or end not in text:
        raise ValueError(f"{where} is not an Ed25519 {kind.lower()} (PEM)")
    try:
        der = base64.b64decode(text.split(begin, 1)[1].split(end, 1)[0], validate=False)
    except ValueError as exc:
        raise ValueError(f"{where} is not an Ed25519 {kind.lower()} (PEM)") from exc
    if not der.startswith(prefix) or len(der) != len(prefix) + 32:
        raise ValueError(f"{where} is not an Ed25519 {kind.lower()}")
    return der[len(prefix):]


def _raw_public(public_key) -> bytes:
    return bytes(public_key)


def key_id(public_key) -> str:
    """A short, stable name of a public key: sha256 of its raw bytes, 16 hex digits."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_keys(out_dir: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into out_dir (private key 0600); (private, public) paths."""
    from nacl.signing import SigningKey

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            raise FileExistsError(f"{path} already exists; not overwriting a key")
    key = SigningKey.generate()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_pem("PRIVATE KEY", _PKCS8_PREFIX + bytes(key)))
    os.chmod(private, 0o600)  # whatever the umask
    public.write_bytes(_pem("PUBLIC KEY", _SPKI_PREFIX + bytes(key.verify_key)))
    log.info("key pair written: %s (private), %s (public, id %s)", private, public,
             key_id(key.verify_key))
    return private, public


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file; ValueError if it is not one."""
    from nacl.signing import VerifyKey

    return VerifyKey(_der(Path(path).read_bytes(), "PUBLIC KEY", _SPKI_PREFIX, path))


def sign_model(model: str | Path, private_key: str | Path) -> Path:
    """Sign a model file with a PEM Ed25519 private key; writes and returns MODEL.onnx.sig."""
    from nacl.signing import SigningKey

    key = SigningKey(_der(Path(private_key).read_bytes(), "PRIVATE KEY", _PKCS8_PREFIX,
                          private_key))
    data = Path(model).read_bytes()
    sig = {"algorithm": ALGORITHM, "file": Path(model).name,
           "sha256": hashlib.sha256(data).hexdigest(), "key_id": key_id(key.verify_key),
           "signature": base64.b64encode(key.sign(data).signature).decode()}
    out = signature_path(model)
    out.write_text(json.dumps(sig, indent=1) + "\n")
    log.info("signed %s (sha256 %s) with key %s -> %s", model, sig["sha256"], sig["key_id"],
             out)
    return out


def verify_model(model: str | Path, public_key: str | Path = RELEASE_PUBLIC_KEY,
                 signature: str | Path | None = None, *, data: bytes | None = None) -> Verified:
    """Check a model file (or its bytes, already read) against its signature and a trusted key.

    Raises SignatureError if they do not match. Pass `data` to check exactly the bytes that
    will be used, so that a file changed after the check cannot slip in.
    """
    from nacl.exceptions import BadSignatureError

    model = Path(model)
    sig_file = Path(signature) if signature else signature_path(model)
    if not sig_file.is_file():
        raise SignatureError(f"{model.name} is not signed: no signature file {sig_file} "
                             "(sign it with `pneumo model sign`, or install with "
                             "--allow-unsigned)")
    try:
        sig = bounded_json.load_file(sig_file, max_bytes=MAX_SIG_BYTES)
        raw = base64.b64decode(sig["signature"], validate=True)
        if sig.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {sig.get('algorithm')!r}, not {ALGORITHM}")
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signature file {sig_file} cannot be read: {exc}") from exc
    key = load_public_key(public_key)
    data = model.read_bytes() if data is None else data
    digest = hashlib.sha256(data).hexdigest()
    if sig.get("key_id") != key_id(key):
        raise SignatureError(f"the signature {sig_file} was made with key {sig.get('key_id')}, "
                             f"not the trusted key {key_id(key)} ({public_key})")
    try:
        key.verify(data, raw)
    except BadSignatureError as exc:
        raise SignatureError(f"the signature {sig_file} does not match {model.name}: the file "
                             f"was changed after signing (sha256 {digest}) or the signature "
                             "is damaged") from exc
    return Verified(key_id=key_id(key), sha256=digest)
