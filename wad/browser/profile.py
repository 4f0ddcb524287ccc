"""Login persistence: the encrypted archive of a browser profile's login, and the trash folder.

What is packed: the parts of a Chromium profile that hold a WhatsApp Web login (IndexedDB, Local
Storage, the cookie database); caches, logs and lock files are left out. They are first copied
aside (a copy that did not change while it was taken), then packed into a deterministic gzip'd
tar (fixed times, owners, modes and order, no time in the gzip header): the same login gives the
same bytes and the same SHA-256, so an unchanged login stores nothing new.

Sealing (format 2, `WADA2`): AES-256-GCM in 1 MiB chunks, streamed through temporary files. The
key is derived with HKDF-SHA256 from a secret of at least 32 bytes (`WAD_SECRET_KEY`, else the 32
random bytes of `STATE_DIR/secret.key`, mode 0600, created on first use); every chunk is bound to
the organization id (associated data), so an archive moved to another organization's row does
not decrypt. The archive carries the id of its key, so that older keys (`WAD_SECRET_KEY_OLD`) can
still be read while `wad secret rotate` re-seals everything under the current one. Format 1
(`WADA1`: one AES-GCM block under the SHA-256 of the secret, no organization binding) is still
read, never written.

Restoring never half-fails: the archive is decrypted, checked against its digest and unpacked
into a temporary folder next to the profile, which is then renamed into place.

Session data is never deleted here: a profile that must go is moved to
`STATE_DIR/sessions/trash/org-<id>-<UTC timestamp>`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import secrets
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wad.errors import WadError

# Paths inside a profile that hold the login (WhatsApp Web keeps its keys and state in IndexedDB
# and Local Storage; the cookie database holds the site's cookies, and its journal, when present,
# lets SQLite roll back a transaction the copy caught halfway; `storage.json` is the whole login of
# a shared-browser session, see `wad.browser.shared`). Everything else - Cache, Code
# Cache, GPUCache, Service Worker's CacheStorage, Session Storage - is rebuilt by Chromium.
LOGIN_PARTS = ("Default/IndexedDB", "Default/Local Storage", "Default/Cookies",
               "Default/Cookies-journal", "storage.json")
# Files inside those parts that are no part of the data: leveldb's lock and its text logs.
_SKIPPED_NAMES = frozenset({"LOCK", "LOG", "LOG.old"})

MIN_SECRET_BYTES = 32
_MAGIC = b"WADA1"  # format 1: one AES-GCM block, key = SHA-256 of the secret (read only)
_MAGIC2 = b"WADA2"  # format 2: chunked AES-GCM, HKDF key, organization bound, key id
_KEY_ID_BYTES = 8
_PREFIX_BYTES = 7  # nonce = prefix (7) + chunk number (4) + last-chunk flag (1)
_HEADER2 = len(_MAGIC2) + _KEY_ID_BYTES + _PREFIX_BYTES
CHUNK = 1 << 20
_TAG = 16
_COPY_ATTEMPTS = 5
_READ = 1 << 16


class ArchiveError(WadError):
    """An archive could not be opened (wrong key, another organization's, corrupted) or
    written."""


# -- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ArchiveKey:
    """One secret's keys: `key` seals format 2, `legacy` opens format 1; `key_id` names it."""

    key_id: str
    key: bytes
    legacy: bytes


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"wad session archive",
                info=info).derive(secret)


def derive_key(secret: bytes, *, legacy: bytes | None = None) -> ArchiveKey:
    """The archive key of a secret (HKDF-SHA256) and its public id. `legacy`: the format-1 key
    that went with it (default: SHA-256 of the secret, as format 1 did)."""
    return ArchiveKey(key_id=_hkdf(secret, b"key id", _KEY_ID_BYTES).hex(),
                      key=_hkdf(secret, b"archive key v2", 32),
                      legacy=legacy if legacy is not None else hashlib.sha256(secret).digest())


class Keyring:
    """The current key (seals) and the older ones (only open)."""

    def __init__(self, current: ArchiveKey, older: Sequence[ArchiveKey] = ()) -> None:
        self.current = current
        self.keys = [current, *(k for k in older if k.key_id != current.key_id)]

    def by_id(self, key_id: str) -> ArchiveKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def check_secret(secret: str, *, name: str = "WAD_SECRET_KEY") -> None:
    """Refuse a secret shorter than 32 bytes, naming the variable."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ArchiveError(
            f"{name}: must be at least {MIN_SECRET_BYTES} bytes, got {len(secret.encode())} "
            "(make one with `openssl rand -base64 48`)")


def _key_file(state_dir: Path, *, create: bool) -> bytes | None:
    path = state_dir / "secret.key"
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise ArchiveError(f"{path} must hold exactly 32 bytes")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return data
    if not create:
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def load_key(state_dir: Path, secret: str = "") -> bytes:
    """The format-1 key: SHA-256 of the secret when given, else the key file (created 0600)."""
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    data = _key_file(state_dir, create=True)
    assert data is not None
    return data


def keyring(state_dir: Path, secret: str = "", old_secrets: Iterable[str] = ()) -> Keyring:
    """The daemon's keys. Current: from `secret` (at least 32 bytes) or else the key file
    (created 0600). Readable too: `old_secrets` (any length: they only open archives) and the key
    file when a secret replaced it."""
    older = [derive_key(s.encode()) for s in old_secrets if s]
    if secret:
        check_secret(secret)
        current = derive_key(secret.encode())
        file_key = _key_file(state_dir, create=False)
        if file_key is not None:
            older.append(derive_key(file_key, legacy=file_key))
    else:
        file_key = _key_file(state_dir, create=True)
        assert file_key is not None
        current = derive_key(file_key, legacy=file_key)
    return Keyring(current, older)


# -- packing ------------------------------------------------------------------------------------


def _login_files(profile_dir: Path) -> list[tuple[str, Path]]:
    """(name in the archive, path) of every file that holds the login, sorted by name."""
    found: list[tuple[str, Path]] = []
    for part in LOGIN_PARTS:
        source = profile_dir / part
        if source.is_file() and not source.is_symlink():
            found.append((part, source))
        elif source.is_dir():
            for path in source.rglob("*"):
                if path.name in _SKIPPED_NAMES or path.is_symlink() or not path.is_file():
                    continue
                found.append((path.relative_to(profile_dir).as_posix(), path))
    return sorted(found)


def _signature(files: list[tuple[str, Path]]) -> list[tuple[str, int, int]] | None:
    try:
        return [(name, st.st_size, st.st_mtime_ns)
                for name, path in files for st in [path.stat()]]
    except FileNotFoundError:
        return None


def copy_login(profile_dir: Path, target: Path) -> None:
    """Copy the login files into `target` so that the copy is consistent: the files did not
    change (size, time, set of files) while they were copied; else try again."""
    for _ in range(_COPY_ATTEMPTS):
        if target.exists():
            shutil.rmtree(target)
        try:
            files = _login_files(profile_dir)
            before = _signature(files)
            for name, path in files:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / name)
        except FileNotFoundError:  # removed by a compaction while we looked or copied
            continue
        if before is not None and before == _signature(_login_files(profile_dir)):
            return
    raise ArchiveError(f"the profile kept changing while it was copied ({_COPY_ATTEMPTS} tries)")


class _HashingWriter:
    """Counts and hashes what goes through to a file (the digest of the plaintext)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _pack(source_dir: Path, out: IO[bytes] | _HashingWriter) -> None:
    """A deterministic gzip'd tar of the login files under `source_dir`."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0,  # type: ignore[arg-type]
                       compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, path in _login_files(source_dir):
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = 0o600
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as handle:
                tar.addfile(info, handle)


@dataclass(frozen=True)
class Packed:
    """A packed login in a temporary file: its path, and the SHA-256 and size of its bytes."""

    path: Path
    sha256: bytes
    size: int


def pack_login(profile_dir: Path, work_dir: Path) -> Packed:
    """Copy the login aside (`copy_login`) and pack it into `work_dir/login.tar.gz`."""
    copy = work_dir / "copy"
    copy_login(profile_dir, copy)
    path = work_dir / "login.tar.gz"
    with path.open("wb") as raw:
        writer = _HashingWriter(raw)
        _pack(copy, writer)
    shutil.rmtree(copy)
    return Packed(path, writer.sha.digest(), writer.size)


def pack_profile(profile_dir: Path) -> bytes:
    """The packed login parts of the profile, in memory (for small profiles and tests)."""
    with tempfile.TemporaryDirectory(prefix="wad-pack-") as work:
        return pack_login(profile_dir, Path(work)).path.read_bytes()


def _check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for member in members:
        if not any(member.name == p or member.name.startswith(p + "/") for p in LOGIN_PARTS):
            raise ArchiveError(f"unexpected path in archive: {member.name}")
    return members


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    tar.extract(member, dest, filter="data")


def _unpack(fileobj: IO[bytes], dest: Path) -> None:
    """Unpack into `dest` and check that every file arrived whole."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
            members = _check_members(tar)
            for member in members:
                _extract_member(tar, member, dest)
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"archive cannot be unpacked: {exc}") from None
    for member in members:
        path = dest / member.name
        if member.isfile() and (not path.is_file() or path.stat().st_size != member.size):
            raise ArchiveError(f"unpacked file is missing or short: {member.name}")


def unpack_profile(plain: bytes, profile_dir: Path) -> None:
    """Recreate the login parts of a profile from `pack_profile`'s output."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    _unpack(io.BytesIO(plain), profile_dir)


def digest(plain: bytes) -> str:
    return hashlib.sha256(plain).hexdigest()


# -- sealing ------------------------------------------------------------------------------------


def seal(plain: bytes, key: bytes) -> bytes:
    """Format 1 (read only since format 2; kept for tests of the migration path)."""
    nonce = secrets.token_bytes(12)
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plain, _MAGIC)


def unseal(blob: bytes, key: bytes) -> bytes:
    """Open format 1; raises `ArchiveError` on a wrong key or a damaged archive."""
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
        raise ArchiveError("not a wad session archive")
    nonce = blob[len(_MAGIC):len(_MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(_MAGIC) + 12:], _MAGIC)
    except InvalidTag:
        raise ArchiveError("session archive cannot be decrypted (wrong key or damaged)") from None


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    return prefix + number.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def seal_file(path: Path, key: ArchiveKey, org_id: uuid.UUID) -> bytes:
    """Format 2 of the file's bytes, sealed for `org_id`: encrypted chunk by chunk into a file
    beside it, read back once (memory holds the result and one chunk, not the plaintext)."""
    header = _MAGIC2 + bytes.fromhex(key.key_id) + secrets.token_bytes(_PREFIX_BYTES)
    aad = header + org_id.bytes
    aead = AESGCM(key.key)
    size = path.stat().st_size
    sealed = path.with_name(path.name + ".sealed")
    try:
        with path.open("rb") as source, sealed.open("wb") as out:
            out.write(header)
            number, last = 0, False
            while not last:
                chunk = source.read(CHUNK)
                last = source.tell() >= size
                out.write(aead.encrypt(_nonce(header[-_PREFIX_BYTES:], number, last), chunk,
                                       aad))
                number += 1
        return sealed.read_bytes()
    finally:
        sealed.unlink(missing_ok=True)


def key_id_of(blob: bytes) -> str | None:
    """The key id of a format-2 archive; None for format 1."""
    if blob.startswith(_MAGIC2) and len(blob) >= _HEADER2:
        return blob[len(_MAGIC2):len(_MAGIC2) + _KEY_ID_BYTES].hex()
    return None


def open_to_file(blob: bytes, keys: Keyring, org_id: uuid.UUID,
                 out: IO[bytes] | _HashingWriter) -> str:
    """Decrypt an archive of `org_id` into `out`; answer the id of the key that opened it
    ("legacy" for format 1). Raises `ArchiveError` saying why it cannot be opened."""
    if blob.startswith(_MAGIC):
        for key in keys.keys:
            try:
                out.write(unseal(blob, key.legacy))
                return "legacy"
            except ArchiveError:
                continue
        raise ArchiveError("format-1 archive cannot be decrypted with any configured key "
                           "(wrong key or damaged)")
    if not blob.startswith(_MAGIC2) or len(blob) < _HEADER2 + _TAG:
        raise ArchiveError("not a wad session archive")
    header = blob[:_HEADER2]
    key_id = key_id_of(blob) or ""
    found = keys.by_id(key_id)
    if found is None:
        raise ArchiveError(f"archive sealed with key {key_id}, which is not configured (set "
                           "the old secret in WAD_SECRET_KEY_OLD until `wad secret rotate` ran)")
    aead = AESGCM(found.key)
    aad = header + org_id.bytes
    pos, number = _HEADER2, 0
    while True:
        chunk = blob[pos:pos + CHUNK + _TAG]
        pos += len(chunk)
        last = pos >= len(blob)
        try:
            out.write(aead.decrypt(_nonce(header[-_PREFIX_BYTES:], number, last), chunk, aad))
        except InvalidTag:
            raise ArchiveError(
                "session archive cannot be decrypted: it belongs to another organization or "
                "is damaged") from None
        number += 1
        if last:
            return key_id


def reseal(blob: bytes, keys: Keyring, org_id: uuid.UUID, work_dir: Path) -> bytes | None:
    """The archive sealed under the current key, or None when it already is."""
    if key_id_of(blob) == keys.current.key_id:
        return None
    path = work_dir / f"reseal-{secrets.token_hex(4)}"
    try:
        with path.open("wb") as out:
            open_to_file(blob, keys, org_id, out)
        return seal_file(path, keys.current, org_id)
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder in `parent` (the profiles' disk, not /tmp: it holds login data),
    removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- restoring ----------------------------------------------------------------------------------


def _restore_prefix(org_id: object) -> str:
    return f".restore-org-{org_id}-"


def work_prefixes(org_id: object) -> tuple[str, ...]:
    """How the names of an organization's temporary folders in `sessions_dir` begin (packing,
    restoring): left behind only by a killed daemon, and they hold login data."""
    return (f".pack-org-{org_id}-", _restore_prefix(org_id))


def restore(blob: bytes, keys: Keyring, org_id: uuid.UUID, sha256: bytes,
            target: Path) -> str:
    """Bring a profile back from an archive without ever leaving a partial one: decrypt and
    check the digest into a temporary folder next to `target`, unpack there, check every file,
    then rename it to `target`. Leftovers of an interrupted restore are removed first. Answers
    the key id used; raises `ArchiveError` (and leaves `target` alone) when anything fails."""
    if target.exists():
        raise ArchiveError(f"{target} exists; a restore never overwrites a profile")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(_restore_prefix(org_id) + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=_restore_prefix(org_id), dir=parent))
    try:
        plain = work / "login.tar.gz"
        with plain.open("w+b") as handle:
            writer = _HashingWriter(handle)
            key_id = open_to_file(blob, keys, org_id, writer)
            if writer.sha.digest() != sha256:
                raise ArchiveError("archive content does not match its recorded digest")
            handle.seek(0)
            staged = work / "profile"
            staged.mkdir()
            _unpack(handle, staged)
        os.rename(staged, target)
        return key_id
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- retention ----------------------------------------------------------------------------------


class ArchiveLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def restored_at(self) -> datetime | None: ...


def retained(archives: Sequence[ArchiveLike], *, now: datetime, keep_latest: int,
             keep_daily_days: int) -> set[int]:
    """Ids of the archives to keep: the newest `keep_latest`, the newest of each UTC day of the
    last `keep_daily_days` days, and the newest one that was ever restored successfully."""
    newest_first = sorted(archives, key=lambda a: a.id, reverse=True)
    kept = {a.id for a in newest_first[:keep_latest]}
    since = now - timedelta(days=keep_daily_days)
    days: set[object] = set()
    for a in newest_first:
        day = a.created_at.astimezone(UTC).date()
        if a.created_at > since and day not in days:
            days.add(day)
            kept.add(a.id)
    restored = next((a for a in newest_first if a.restored_at is not None), None)
    if restored is not None:
        kept.add(restored.id)
    return kept


on_pruned: list[Callable[[uuid.UUID, int], None]] = []
"""Called with (organization, archives deleted) after each pruning (the metrics count it)."""


# The layout under the state directory, in one place (the session actor, the API's
# `wad session backups` / `purge` and the trash below all use it).
_TRASH = "trash"


def sessions_dir(state_dir: Path) -> Path:
    """`STATE_DIR/sessions`: the organizations' browser profiles and the trash folder."""
    return state_dir / "sessions"


def profile_dir(state_dir: Path, org_id: object) -> Path:
    """An organization's live browser profile: `STATE_DIR/sessions/org-<id>`."""
    return sessions_dir(state_dir) / f"org-{org_id}"


def import_profile_dir(state_dir: Path, org_id: object) -> Path:
    """The importer's own browser profile for the organization: `STATE_DIR/sessions/import-<id>`
    (beside the daemon's, never the same)."""
    return sessions_dir(state_dir) / f"import-{org_id}"


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
