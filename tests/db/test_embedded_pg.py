"""The private PostgreSQL cluster: created once, reused, stopped without leftovers."""

from pathlib import Path

import pytest

from wad.db.embedded import EmbeddedPostgres, find_bindir, process_alive
from wad.errors import EmbeddedPostgresError


def _alive(pid: int) -> bool:
    return process_alive(pid)


def test_first_start_creates_second_reuses_stop_leaves_nothing(state_dir: Path) -> None:
    cluster = EmbeddedPostgres(state_dir / "pg", fsync=False)
    assert not cluster.initialized()
    dsn = cluster.start()
    assert cluster.initialized()
    assert cluster.running()
    assert str(state_dir / "pg") in dsn
    first_pid = cluster.pid()
    marker = (state_dir / "pg" / "PG_VERSION").stat().st_mtime_ns
    cluster.stop()
    assert first_pid is not None
    assert not _alive(first_pid)
    assert not cluster.running()

    again = EmbeddedPostgres(state_dir / "pg", fsync=False)
    assert again.initialized()
    again.start()
    assert (state_dir / "pg" / "PG_VERSION").stat().st_mtime_ns == marker  # not re-created
    second_pid = again.pid()
    assert second_pid is not None
    assert second_pid != first_pid
    again.stop()
    assert not _alive(second_pid)


def test_listens_on_a_unix_socket_only(state_dir: Path) -> None:
    cluster = EmbeddedPostgres(state_dir / "pg", fsync=False)
    cluster.start()
    try:
        conf = (state_dir / "pg" / "postmaster.opts").read_text()
        assert "listen_addresses=" in conf.replace("'", "").replace('"', "")
        assert list((state_dir / "pg").glob(".s.PGSQL.*"))
    finally:
        cluster.stop()


def test_missing_server_programs_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="apt-get install postgresql"):
        find_bindir(str(tmp_path / "no-such-bin"))
    cluster = EmbeddedPostgres(tmp_path / "pg", bindir=str(tmp_path / "nothing-here"))
    with pytest.raises(EmbeddedPostgresError, match="no PostgreSQL server programs"):
        cluster.start()
