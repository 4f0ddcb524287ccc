"""Login persistence: the encrypted archive of a browser profile's login, and the trash folder.

The parts of a Chromium profile that hold a WhatsApp Web login (IndexedDB and Local Storage) are
packed into a gzip'd tar and sealed with AES-256-GCM. The key comes from `WAD_SECRET_KEY` (any
string; SHA-256 makes it 32 bytes) or from `STATE_DIR/secret.key` (32 random bytes, mode 0600,
created on first use). Session data is never deleted here: a profile that must go is moved to
`STATE_DIR/sessions/trash/org-<id>-<UTC timestamp>`.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wad.errors import WadError

# Paths inside a profile that hold the login; everything else (caches) is rebuilt by Chromium.
LOGIN_PARTS = ("Default/IndexedDB", "Default/Local Storage")
_MAGIC = b"WADA1"  # format marker + version of the sealed archive


class ArchiveError(WadError):
    """An archive could not be opened (wrong key, corrupted) or written."""


def load_key(state_dir: Path, secret: str = "") -> bytes:
    """The 32-byte archive key: from the secret when given, else the key file (created 0600)."""
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    path = state_dir / "secret.key"
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise ArchiveError(f"{path} must hold exactly 32 bytes")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return data
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def pack_profile(profile_dir: Path) -> bytes:
    """A gzip'd tar of the login parts of the profile (empty parts are skipped)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for part in LOGIN_PARTS:
            source = profile_dir / part
            if source.exists():
                tar.add(source, arcname=part, filter=_skip_locks)
    return buffer.getvalue()


def _skip_locks(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(info.name).name in {"LOCK", "LOG.old"} else info


def unpack_profile(plain: bytes, profile_dir: Path) -> None:
    """Recreate the login parts of a profile from `pack_profile`'s output."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not any(member.name == p or member.name.startswith(p + "/") for p in LOGIN_PARTS):
                raise ArchiveError(f"unexpected path in archive: {member.name}")
        tar.extractall(profile_dir, filter="data")


def seal(plain: bytes, key: bytes) -> bytes:
    """Encrypt and authenticate."""
    nonce = secrets.token_bytes(12)
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plain, _MAGIC)


def unseal(blob: bytes, key: bytes) -> bytes:
    """Decrypt; raises `ArchiveError` on a wrong key or a damaged archive."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
        raise ArchiveError("not a wad session archive")
    nonce = blob[len(_MAGIC):len(_MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_MAGIC) + 12:], _MAGIC)
    except InvalidTag:
        raise ArchiveError("session archive cannot be decrypted (wrong key or damaged)") from None


def digest(plain: bytes) -> str:
    return hashlib.sha256(plain).hexdigest()


# The layout under the state directory, in one place (the session actor, the API's
# `wad session backups` / `purge` and the trash below all use it).
_TRASH = "trash"


def sessions_dir(state_dir: Path) -> Path:
    """`STATE_DIR/sessions`: the organizations' browser profiles and the trash folder."""
    return state_dir / "sessions"


def profile_dir(state_dir: Path, org_id: object) -> Path:
    """An organization's live browser profile: `STATE_DIR/sessions/org-<id>`."""
    return sessions_dir(state_dir) / f"org-{org_id}"


def trash_dir(state_dir: Path) -> Path:
    """Where profiles are moved aside: `STATE_DIR/sessions/trash`."""
    return sessions_dir(state_dir) / _TRASH


def trash_prefix(org_id: object) -> str:
    """How the names of an organization's trash folders begin (`org-<id>-<UTC time>`)."""
    return f"org-{org_id}-"


def move_to_trash(profile_dir: Path, sessions_dir: Path, org_id: object) -> Path | None:
    """Move a profile aside into the trash folder; answer where it went (None if absent)."""
    if not profile_dir.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = sessions_dir / _TRASH / f"{trash_prefix(org_id)}{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(profile_dir), str(target))
    return target
