"""Session archives: sealed, restorable, never readable without the key; the trash keeps data."""

import stat
import uuid
from pathlib import Path

import pytest

from wad.browser import profile as archive


def _profile(root: Path) -> Path:
    profile = root / "org-1"
    idb = profile / "Default" / "IndexedDB" / "http_127.0.0.1_1.indexeddb.leveldb"
    idb.mkdir(parents=True)
    (idb / "000003.log").write_bytes(b"LOGIN-SECRET-DEVICE-KEY" * 10)
    (idb / "LOCK").write_bytes(b"")
    ls = profile / "Default" / "Local Storage" / "leveldb"
    ls.mkdir(parents=True)
    (ls / "000005.ldb").write_bytes(b"local-storage-bytes")
    (profile / "Default" / "Cache").mkdir()
    (profile / "Default" / "Cache" / "big").write_bytes(b"x" * 1000)
    return profile


def test_round_trip_restores_only_login_parts(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    key = archive.load_key(tmp_path)
    plain = archive.pack_profile(profile)
    sealed = archive.seal(plain, key)
    assert b"LOGIN-SECRET-DEVICE-KEY" not in sealed
    assert b"local-storage-bytes" not in sealed

    restored = tmp_path / "restored"
    archive.unpack_profile(archive.unseal(sealed, key), restored)
    log = restored / "Default/IndexedDB/http_127.0.0.1_1.indexeddb.leveldb/000003.log"
    assert log.read_bytes() == b"LOGIN-SECRET-DEVICE-KEY" * 10
    assert (restored / "Default/Local Storage/leveldb/000005.ldb").read_bytes() == b"local-storage-bytes"
    assert not (restored / "Default" / "Cache").exists()
    assert not (log.parent / "LOCK").exists()


def test_wrong_key_or_damage_is_refused(tmp_path: Path) -> None:
    sealed = archive.seal(archive.pack_profile(_profile(tmp_path)), archive.load_key(tmp_path))
    with pytest.raises(archive.ArchiveError, match="cannot be decrypted"):
        archive.unseal(sealed, archive.load_key(tmp_path, secret="another"))
    damaged = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(archive.ArchiveError):
        archive.unseal(damaged, archive.load_key(tmp_path))
    with pytest.raises(archive.ArchiveError, match="not a wad session archive"):
        archive.unseal(b"plain bytes", archive.load_key(tmp_path))


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = archive.load_key(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert archive.load_key(tmp_path) == first
    assert archive.load_key(tmp_path, secret="s3cret") != first


def test_move_to_trash_keeps_everything(tmp_path: Path) -> None:
    profile = _profile(tmp_path / "sessions")
    target = archive.move_to_trash(profile, tmp_path / "sessions", "1")
    assert target is not None and not profile.exists()
    assert target.parent == tmp_path / "sessions" / "trash"
    assert target.name.startswith("org-1-")
    assert (target / "Default/Cache/big").read_bytes() == b"x" * 1000
    assert archive.move_to_trash(profile, tmp_path / "sessions", "1") is None


def test_shared_mode_profile_round_trip_keeps_storage_state(tmp_path: Path) -> None:
    # A shared-browser session's whole login is `storage.json` in its profile folder.
    profile = tmp_path / "org-2"
    profile.mkdir()
    state = b'{"cookies":[],"origins":[{"origin":"http://127.0.0.1:1","indexedDB":[]}]}'
    (profile / "storage.json").write_bytes(state)
    (profile / ".storage.json.tmp").write_bytes(b"half written")
    keys = archive.keyring(tmp_path)
    org = uuid.uuid4()
    work = tmp_path / "work"
    work.mkdir()
    packed = archive.pack_login(profile, work)
    sealed = archive.seal_file(packed.path, keys.current, org)
    assert b"origins" not in sealed

    restored = tmp_path / "elsewhere" / "org-2"
    archive.restore(sealed, keys, org, packed.sha256, restored)
    assert (restored / "storage.json").read_bytes() == state
    assert sorted(p.name for p in restored.iterdir()) == ["storage.json"]
