"""The process environment: secrets taken out of it once at start, and the minimal environment
of the programs wad starts (browsers, the embedded PostgreSQL).

`wad run` calls `take_secrets()` right after loading its settings: every secret variable moves
from `os.environ` into this module, so that no program started later (Playwright's driver, a
plugin's subprocess) inherits it. Code that needs one asks `secret(NAME)`. Browsers and
PostgreSQL get `child_env()`: a handful of harmless variables, never a secret or a DSN.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager

SECRETS = ("WAD_SECRET_KEY", "WAD_SECRET_KEY_OLD", "WAD_DATABASE_URL", "OPENROUTER_API_KEY",
           "WAD_WEBHOOK_SECRET", "PGPASSWORD")
"""The secrets wad itself reads."""

_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY$|API_?KEY|_DSN$|"
    r"DATABASE_URL", re.IGNORECASE)

CHILD_VARIABLES = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
    "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "TZ", "TMPDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "FONTCONFIG_PATH",
    "FONTCONFIG_FILE",
)
"""What a started program may see of this process's environment (display and locale, where
temporary files and caches go), unless the name looks like a secret."""

_taken: dict[str, str] = {}


def is_secret(name: str) -> bool:
    """Whether a variable's name says it holds a secret (a key, a password, a token, a DSN)."""
    return name in SECRETS or bool(_SECRET_NAME.search(name))


def take_secrets(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Move every secret variable out of ENVIRON (`os.environ`) into this module, where
    `secret()` finds it; answer their names. Idempotent."""
    environ = os.environ if environ is None else environ
    names = sorted(name for name in environ if is_secret(name))
    for name in names:
        _taken[name] = environ.pop(name)
    return names


def secret(name: str) -> str:
    """A secret variable as it was at start ("" when unset): taken by `take_secrets`, else
    still in the environment (before `take_secrets`, in tests and library use)."""
    return _taken.get(name) or os.environ.get(name, "")


def with_secrets() -> dict[str, str]:
    """The environment as it was at start: `os.environ` with the taken secrets put back (for
    re-reading the configuration on SIGHUP; never for a child process)."""
    return {**os.environ, **_taken}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a program wad starts: `CHILD_VARIABLES` found in this process's
    environment (none that looks like a secret), plus EXTRA."""
    env = {name: os.environ[name] for name in CHILD_VARIABLES
           if name in os.environ and not is_secret(name)}
    env.setdefault("PATH", os.defpath)
    env.update(extra)
    return env


@contextmanager
def node_options(options: Sequence[str]) -> Iterator[None]:
    """While in the block, `NODE_OPTIONS` carries OPTIONS after the operator's own (for a node
    program that inherits this process's environment as it starts: Playwright's driver)."""
    if not options:
        yield
        return
    before = os.environ.get("NODE_OPTIONS")
    os.environ["NODE_OPTIONS"] = " ".join(filter(None, (before, *options)))
    try:
        yield
    finally:
        if before is None:
            del os.environ["NODE_OPTIONS"]
        else:
            os.environ["NODE_OPTIONS"] = before
