"""Does the bridge stay inside what real WhatsApp Web clients rely on?

`check` compares the modules and members `bridge.js` uses with those the pinned whatsapp-web.js
package uses (its `src/` folder), and answers one line for each that whatsapp-web.js does not
touch and that the allowlist in `docs/bridge.md` does not name with a reason. The bridge's uses
are its `SURFACE` table (which the bridge also checks at run time) plus every `mod('Name')` and
`mod('Name').member` in its code, so code and table cannot drift apart unnoticed.

Members are compared at the first level (`WAWebCmd.Cmd`, not `WAWebCmd.Cmd.refreshQR`): that is
as deep as whatsapp-web.js's uses can be read reliably without running it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

BRIDGE = Path(__file__).with_name("bridge.js")
ROOT = Path(__file__).resolve().parents[2]
PEER_SRC = ROOT / "tests" / "conformance" / "node_modules" / "whatsapp-web.js" / "src"
ALLOWLIST = ROOT / "docs" / "bridge.md"
ALLOWLIST_HEADING = "## Used by the bridge but not by whatsapp-web.js"

Uses = dict[str, set[str]]
"""Module name -> first-level members used (`""` when the module itself is used)."""

_Q = r"""['"](\w+)['"]"""
_REQUIRE = r"window\s*\.\s*require\s*\(\s*" + _Q + r"\s*,?\s*\)"
_MEMBER = r"\s*\.\s*(\w+)"


class SurfaceError(Exception):
    """A source the checker needs is missing or malformed."""


def _uses() -> Uses:
    return defaultdict(set)


def _destructured(names: str) -> list[str]:
    """`a, b: c, ...rest` -> the property names read (`a`, `b`)."""
    out = []
    for part in names.split(","):
        name = part.split(":")[0].split("=")[0].strip()
        if re.fullmatch(r"\w+", name):
            out.append(name)
    return out


def _aliased(text: str, pattern: str, uses: Uses) -> None:
    """`const NAME = <module expression>` (pattern groups: NAME, module): `NAME.member` and
    `NAME().member` in the same text are uses of that module's member."""
    for m in re.finditer(pattern, text):
        alias, module = m.group(1), m.group(2)
        uses[module].add("")
        for use in re.finditer(r"(?<![\w.])" + re.escape(alias) + r"(?:\(\))?" + _MEMBER, text):
            uses[module].add(use.group(1))


def peer_uses(src: Path = PEER_SRC) -> Uses:
    """The modules and members the whatsapp-web.js sources under `src` use."""
    files = sorted(src.rglob("*.js")) if src.is_dir() else []
    if not files:
        raise SurfaceError(f"whatsapp-web.js sources not found in {src} (run `make setup`, "
                           "which installs tests/conformance with npm ci)")
    uses = _uses()
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(_REQUIRE + rf"(?:{_MEMBER})?", text):
            uses[m.group(1)].add(m.group(2) or "")
        # const { a, b } = window.require('X')
        for m in re.finditer(r"\{([^{}]*)\}\s*=\s*" + _REQUIRE + r"(?!\s*\.)", text):
            uses[m.group(2)].update(_destructured(m.group(1)))
        # injectToFunction({module: 'X', function: 'a.b'})
        for m in re.finditer(r"module\s*:\s*" + _Q + r"\s*,\s*function\s*:\s*" + _Q, text):
            uses[m.group(1)].add(m.group(2).split(".")[0])
        # const X = window.require('X'); X.member
        _aliased(text, r"(?:const|let|var)\s+(\w+)\s*=\s*" + _REQUIRE + r"\s*;", uses)
    # Names on `window` are shared by all the files: window.AuthStore.Name = window.require('X');
    # then window.AuthStore.Name.member anywhere.
    text = "\n".join(path.read_text(encoding="utf-8") for path in files)
    _aliased(text, r"(window\s*\.\s*\w+\s*\.\s*\w+)\s*=\s*" + _REQUIRE + r"\s*;", uses)
    # window.AuthStore.Name = {...window.require('A'), ...window.require('B')}: a member read
    # through Name may come from any of them.
    for m in re.finditer(r"(window\s*\.\s*\w+\s*\.\s*\w+)\s*=\s*\{((?:\s*\.\.\.\s*"
                         + _REQUIRE + r"\s*,?)+)\s*\}", text):
        modules = re.findall(_REQUIRE, m.group(2))
        members = {u.group(1) for u in re.finditer(
            r"(?<![\w.])" + re.escape(m.group(1)) + _MEMBER, text)}
        for module in modules:
            uses[module].update(members | {""})
    return uses


def declared_surface(bridge_text: str) -> dict[str, dict[str, str]]:
    """The bridge's `SURFACE` table (between `// surface:begin` and `// surface:end`)."""
    m = re.search(r"//\s*surface:begin\s*const\s+SURFACE\s*=\s*(\{.*?\});\s*//\s*surface:end",
                  bridge_text, re.S)
    if m is None:
        raise SurfaceError("bridge.js has no SURFACE table between surface:begin and surface:end")
    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise SurfaceError(f"bridge.js SURFACE declares {', '.join(twice)} twice")
        return dict(pairs)

    try:
        table = json.loads(m.group(1), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise SurfaceError(f"bridge.js SURFACE is not strict JSON: {exc}") from None
    return {str(k): {str(mk): str(kind) for mk, kind in v.items()} for k, v in table.items()}


def bridge_uses(bridge_text: str) -> tuple[Uses, list[str]]:
    """What the bridge uses (SURFACE and its code), and the code's uses SURFACE does not
    declare (each one line)."""
    table = declared_surface(bridge_text)
    declared = _uses()
    for key, kinds in table.items():
        for module in key.split("|"):
            declared[module].update(member.split(".")[0] for member in kinds)
    code = bridge_text.split("// surface:end", 1)[-1]
    found = _uses()
    call = r"mod\(\s*" + _Q + r"\s*\)"
    for m in re.finditer(call + rf"(?:{_MEMBER})?", code):
        found[m.group(1)].add(m.group(2) or "")
    _aliased(code, r"(?:const|let|var)\s+(\w+)\s*=\s*(?:\(\)\s*=>\s*)?" + call + r"\s*;", found)
    undeclared = []
    for module, used in sorted(found.items()):
        if module not in declared:
            undeclared.append(f"{module} is used by the bridge's code but not declared in SURFACE")
            continue
        for member in sorted(used - declared[module] - {""}):
            undeclared.append(f"{module}.{member} is used by the bridge's code but not declared "
                              "in SURFACE")
    uses = _uses()
    for source in (declared, found):
        for module, used in source.items():
            uses[module].update(used)
    return uses, undeclared


def allowlist(text: str) -> dict[str, str]:
    """The allowlist section of docs/bridge.md: lines ``- `Module.member`: reason``."""
    section = text.split(ALLOWLIST_HEADING, 1)
    if len(section) < 2:
        raise SurfaceError(f"docs/bridge.md has no section {ALLOWLIST_HEADING!r}")
    body = section[1].split("\n## ", 1)[0]
    allowed = {}
    for m in re.finditer(r"^- `([\w.]+)`:\s*(.*\S)", body, re.M):
        allowed[m.group(1)] = m.group(2)
    return allowed


def _label(module: str, member: str) -> str:
    return f"{module}.{member}" if member else module


def check(bridge_text: str, peer: Uses, allowed: dict[str, str]) -> list[str]:
    """One line per problem: a module or member the bridge uses that whatsapp-web.js does not
    and the allowlist does not name, or a use of the bridge's code missing from SURFACE."""
    uses, problems = bridge_uses(bridge_text)
    for module, members in sorted(uses.items()):
        if module not in peer:
            if module not in allowed:
                problems.append(f"{module}: module not used by whatsapp-web.js")
            continue
        for member in sorted(members - peer[module] - {""}):
            if _label(module, member) not in allowed and module not in allowed:
                problems.append(f"{module}.{member}: member not used by whatsapp-web.js")
    return problems


def check_files(bridge: Path = BRIDGE, src: Path = PEER_SRC,
                allowlist_file: Path = ALLOWLIST) -> list[str]:
    """`check` on the real files."""
    return check(bridge.read_text(encoding="utf-8"), peer_uses(src),
                 allowlist(allowlist_file.read_text(encoding="utf-8")))


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m wad.browser.surface`: print the problems; exit 1 if there are any."""
    del argv
    problems = check_files()
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
