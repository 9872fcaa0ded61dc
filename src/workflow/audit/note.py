"""C2SP signed notes, checkpoints and cosignatures with Ed25519 (the ``cryptography`` package).

Formats (c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature):

* a **note** is UTF-8 text ending in a newline, a blank line, then signature lines
  ``— <key name> <base64(4-byte key ID || signature)>`` (em dash U+2014);
* a **checkpoint** is a note whose text is the origin line, the tree size in decimal, the
  base64 root hash, then optional extension lines;
* an **Ed25519 note signature** (type 0x01) signs the note text; its key ID is
  ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``;
* a **cosignature** (type 0x04, ``cosignature/v1``) is a witness's statement that it checked
  the checkpoint is consistent with everything it saw before: the signature is over
  ``"cosignature/v1\\ntime <T>\\n" || checkpoint text`` and the signature bytes are the 8-byte
  big-endian timestamp ``T`` (POSIX seconds) then the 64-byte Ed25519 signature; its key ID is
  ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``.

Keys are text, as in Go's ``golang.org/x/mod/sumdb/note``: a verifier key (*vkey*)
``<name>+<hex key ID>+<base64(type || public key)>``, a signer key
``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || 32-byte seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE = 0x04
DASH = "\u2014"
#: A note larger than this is not read (a checkpoint is ~100 bytes, a signature line ~120).
NOTE_LIMIT = 1 << 20
MAX_SIGNATURES = 100
_NAME = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or does not verify (one line)."""


def key_id(name: str, kind: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([kind]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or not name.isprintable():
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A public key that checks note signatures (``kind`` 0x01) or cosignatures (0x04)."""

    name: str
    kind: int
    public: bytes

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.kind, self.public)

    def vkey(self) -> str:
        blob = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{blob}"

    def as_witness(self) -> Verifier:
        """The same key read as a cosigner (type 0x04)."""
        return Verifier(self.name, COSIGNATURE, self.public)

    def verify(self, text: str, signature: bytes) -> int | None:
        """Check one signature (without its key ID) over ``text``; for a cosignature return
        its timestamp, else 0; None if it does not verify."""
        key = Ed25519PublicKey.from_public_bytes(self.public)
        if self.kind == COSIGNATURE:
            if len(signature) != 8 + 64:
                return None
            stamp = int.from_bytes(signature[:8], "big")
            if stamp >= 1 << 63:
                return None
            message = f"cosignature/v1\ntime {stamp}\n{text}".encode()
            signature = signature[8:]
        else:
            if len(signature) != 64:
                return None
            stamp, message = 0, text.encode("utf-8")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return None
        return stamp

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may hold '+'
        if len(parts) != 3:
            raise NoteError("not a verifier key (name+keyid+base64)")
        name, hex_id, blob = parts
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("verifier key: not base64") from None
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE):
            raise NoteError("verifier key: not an Ed25519 key (type 0x01 or 0x04)")
        verifier = cls(name, raw[0], raw[1:])
        if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or int(hex_id, 16) != verifier.key_id:
            raise NoteError("verifier key: its key ID does not match its name and key")
        return verifier


@dataclass(frozen=True)
class Signer:
    """A private Ed25519 key with its name: signs notes (0x01) or cosigns (0x04)."""

    name: str
    kind: int
    seed: bytes

    @classmethod
    def generate(cls, name: str, kind: int = ED25519) -> Signer:
        seed = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(_check_name(name), kind, seed)

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.kind, _raw_public(self._key().public_key()))

    def skey(self) -> str:
        blob = base64.b64encode(bytes([self.kind]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{blob}"

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signer key (PRIVATE+KEY+name+keyid+base64)")
        name, hex_id, blob = parts[2:]
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("signer key: not base64") from None
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE):
            raise NoteError("signer key: not an Ed25519 key (type 0x01 or 0x04)")
        signer = cls(name, raw[0], raw[1:])
        if hex_id != f"{signer.verifier.key_id:08x}":
            raise NoteError("signer key: its key ID does not match its name and key")
        return signer

    def sign(self, text: str, now: int | None = None) -> str:
        """The signature line for note ``text`` (a cosignature stamped ``now``)."""
        if self.kind == COSIGNATURE:
            stamp = int(time.time()) if now is None else now
            message = f"cosignature/v1\ntime {stamp}\n{text}".encode()
            raw = stamp.to_bytes(8, "big") + self._key().sign(message)
        else:
            raw = self._key().sign(text.encode("utf-8"))
        blob = base64.b64encode(self.verifier.key_id.to_bytes(4, "big") + raw).decode()
        return f"{DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str
    #: (key name, key ID, signature bytes without the key ID), in the order written.
    signatures: tuple[tuple[str, int, bytes], ...]

    def render(self) -> str:
        lines = [
            f"{DASH} {name} {base64.b64encode(kid.to_bytes(4, 'big') + sig).decode()}\n"
            for name, kid, sig in self.signatures
        ]
        return self.text + "\n" + "".join(lines)

    def signed_by(self, verifier: Verifier) -> int | None:
        """The timestamp (0 for a plain signature) of ``verifier``'s valid signature, or
        None if it did not sign. A signature of this key that fails is an error."""
        for name, kid, sig in self.signatures:
            if name == verifier.name and kid == verifier.key_id:
                stamp = verifier.verify(self.text, sig)
                if stamp is None:
                    raise NoteError(f"the signature of {name} does not verify")
                return stamp
        return None


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signature lines; NoteError if malformed."""
    if isinstance(data, bytes):
        if len(data) > NOTE_LIMIT:
            raise NoteError("note too large")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not UTF-8") from None
    if len(data) > NOTE_LIMIT:
        raise NoteError("note too large")
    if any(c < " " and c != "\n" for c in data):
        raise NoteError("note holds a control character")
    split = data.rfind("\n\n")
    if split < 0 or not data.endswith("\n"):
        raise NoteError("not a signed note (no blank line before the signatures)")
    text, block = data[: split + 1], data[split + 2 :]
    signatures: list[tuple[str, int, bytes]] = []
    for line in block.split("\n")[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError("malformed signature line")
        _check_name(parts[1])
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("signature too short")
        signatures.append((parts[1], int.from_bytes(raw[:4], "big"), raw[4:]))
    if not signatures:
        raise NoteError("note has no signature")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError("note has too many signatures")
    return Note(text, tuple(signatures))


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size, root hash (32 bytes), optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise NoteError("not a checkpoint (origin, size, root hash lines)")
        origin, size, root = lines[0], lines[1], lines[2]
        if not _SIZE.fullmatch(size):
            raise NoteError("checkpoint tree size is not a decimal number")
        try:
            raw = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("checkpoint root hash is not base64") from None
        if len(raw) != 32 or base64.b64encode(raw).decode() != root:
            raise NoteError("checkpoint root hash is not 32 bytes in base64")
        return cls(origin, int(size), raw, tuple(lines[3:-1]))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    text = checkpoint.text()
    return text + "\n" + signer.sign(text)


@dataclass(frozen=True)
class OpenedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    #: The names of the witnesses whose cosignatures verified, with their timestamps.
    cosigners: tuple[tuple[str, int], ...]


def open_checkpoint(
    data: str | bytes, log_key: Verifier | None, witnesses: tuple[Verifier, ...] = ()
) -> OpenedCheckpoint:
    """Parse a signed checkpoint and verify it: the log's signature (unless ``log_key`` is
    None: read only), and the cosignatures of the known ``witnesses``. NoteError if the log
    did not sign it, or any signature of a known key fails."""
    note = parse_note(data)
    checkpoint = Checkpoint.parse(note.text)
    if log_key is not None:
        if log_key.kind != ED25519:
            raise NoteError("the log's public key must be an Ed25519 note key (type 0x01)")
        if note.signed_by(log_key) is None:
            raise NoteError(f"the checkpoint is not signed by {log_key.name}")
    cosigners = []
    for w in witnesses:
        stamp = note.signed_by(w.as_witness() if w.kind != COSIGNATURE else w)
        if stamp is not None:
            cosigners.append((w.name, stamp))
    return OpenedCheckpoint(checkpoint, note, tuple(cosigners))


def add_signature(note: Note, line: str) -> str:
    """The note with one more signature line (replacing an earlier one of the same key)."""
    name, kid, sig = parse_note(note.text + "\n" + line).signatures[0]
    kept = tuple(s for s in note.signatures if (s[0], s[1]) != (name, kid))
    return Note(note.text, (*kept, (name, kid, sig))).render()
