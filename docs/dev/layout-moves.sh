#!/usr/bin/env bash
# Phase 2 of issue 15's layout: move wad's modules and the tests into the layout by concern, with
# `git mv`, and rewrite every reference (imports, dotted names in strings, file paths in prose).
# Run it at the root of the merged tree, on a clean work tree:
#     bash docs/dev/layout-moves.sh            # moves, rewrites, runs ruff --fix
# then check: .venv/bin/ruff check wad plugins tests bench; .venv/bin/mypy wad plugins tests;
# make check. The plan it follows, and why, is docs/dev/layout-moves.md. If it stops half-way,
# `git reset --hard && git clean -fd wad tests` puts the tree back (it starts from a clean tree).
set -euo pipefail

test -f pyproject.toml && test -d wad && test -d tests || { echo "run at the repository root" >&2; exit 2; }
git diff --quiet && git diff --cached --quiet || { echo "commit or stash first" >&2; exit 2; }
PY=${PY:-.venv/bin/python}

# 0. The tests: unit/ (neither PostgreSQL nor Chromium), db/ (PostgreSQL), live/ (Chromium) --------
# Classified by the markers tests/conftest.py gives each test (a file goes where its most demanding
# test goes); conftest.py, support/, data/ and conformance/ stay.
collect() {
  $PY -m pytest -q --collect-only -p no:cacheprovider -m "$1" tests >/tmp/layout-collect.txt 2>&1 \
    || { tail -20 /tmp/layout-collect.txt >&2; echo "test collection failed; fix it first" >&2; exit 1; }
  sed -n 's/::.*//p' /tmp/layout-collect.txt | sort -u
}
collect browser >/tmp/layout-live.txt
collect "db and not browser" >/tmp/layout-db.txt
# 1. wad's modules --------------------------------------------------------------------------------
# old file -> new file (a module's dotted name follows from its path).
WAD_MOVES=(
  wad/phone.py                  wad/whatsapp/phone.py
  wad/inbound/parse.py          wad/whatsapp/messages.py
  wad/inbound/names.py          wad/whatsapp/names.py
  wad/inbound/__init__.py       wad/org/inbound/__init__.py
  wad/org/inbound.py            wad/org/inbound/actor.py
  wad/inbound/enrich.py         wad/org/inbound/enrich.py
  wad/inbound/pacing.py         wad/org/inbound/pacing.py
  wad/inbound/spool.py          wad/org/inbound/spool.py
  wad/outbound/__init__.py      wad/org/outbound/__init__.py
  wad/org/outbound.py           wad/org/outbound/actor.py
  wad/outbound/queue.py         wad/org/outbound/queue.py
  wad/outbound/limits.py        wad/org/outbound/limits.py
  wad/outbound/settings.py      wad/org/outbound/settings.py
  wad/outbound/agent.py         wad/org/outbound/agent.py
  wad/org/archive.py            wad/browser/profile.py
  wad/cli.py                    wad/cli/main.py
  wad/ctl.py                    wad/cli/control.py
  wad/outbound/cli.py           wad/cli/send.py
  wad/importer/cli.py           wad/cli/imports.py
  wad/metrics.py                wad/observe/metrics.py
  wad/eventlog.py               wad/observe/eventlog.py
  wad/api/admin.py              wad/api/routes/admin.py
  wad/api/events.py             wad/api/routes/events.py
  wad/api/imports.py            wad/api/routes/imports.py
  wad/api/metrics.py            wad/api/routes/metrics.py
  wad/api/outbound.py           wad/api/routes/outbound.py
  wad/api/status_page.py        wad/api/routes/status_page.py
  wad/api/whatsapp.py           wad/api/routes/whatsapp.py
)
# Directories that move whole (package data).
DIR_MOVES=(
  wad/api/static                wad/api/routes/static
)
# New packages: their docstrings.
declare -A NEW_PACKAGES=(
  [wad/cli]='"""`wad`'"'"'s command line: `main` (the parser, `wad run`, `wad db migrate`, `wad demo`, `wad sim`),
the control commands over the control socket (`control`, `send`, `imports`)."""'
  [wad/observe]='"""What wad shows of itself: Prometheus metrics (`metrics`) and the event log (`eventlog`)."""'
  [wad/api/routes]='"""The control API'"'"'s blueprints, one module per area; `wad.api.app` mounts them."""'
)

export MOVES_FILE DIRS_FILE
MOVES_FILE=$(mktemp); DIRS_FILE=$(mktemp)
printf '%s %s\n' "${WAD_MOVES[@]}" >"$MOVES_FILE"
printf '%s %s\n' "${DIR_MOVES[@]}" >"$DIRS_FILE"

for dir in "${!NEW_PACKAGES[@]}"; do
  mkdir -p "$dir"
done
# A module that becomes a package (wad/org/inbound.py -> wad/org/inbound/actor.py) has to leave
# its place first: move it aside under a temporary name.
while read -r old new; do
  [ -e "$old" ] || { echo "missing: $old (already moved?)" >&2; exit 1; }
  case "$old" in
    wad/org/inbound.py|wad/org/outbound.py|wad/cli.py) git mv "$old" "$old.moving" ;;
  esac
done <"$MOVES_FILE"
while read -r old new; do
  src=$old; [ -e "$old.moving" ] && src=$old.moving
  mkdir -p "$(dirname "$new")"
  git mv "$src" "$new"
done <"$MOVES_FILE"
while read -r old new; do
  mkdir -p "$(dirname "$new")"; git mv "$old" "$new"
done <"$DIRS_FILE"
for dir in "${!NEW_PACKAGES[@]}"; do
  if [ ! -e "$dir/__init__.py" ]; then
    printf '%s\n' "${NEW_PACKAGES[$dir]}" >"$dir/__init__.py"; git add "$dir/__init__.py"
  fi
done
for gone in wad/inbound wad/outbound; do
  if [ -d "$gone" ] && [ -n "$(git ls-files "$gone")" ]; then
    echo "$gone still holds files the plan does not know: $(git ls-files "$gone" | tr '\n' ' ')" >&2
    echo "add them to WAD_MOVES (wad/org/${gone#wad/}/ or wad/whatsapp/) and start again" >&2
    exit 1
  fi
  [ -d "$gone" ] || continue
  find "$gone" -name __pycache__ -prune -exec rm -rf {} +   # caches only
  rmdir "$gone" 2>/dev/null || { echo "$gone is not empty: look at it" >&2; exit 1; }
done

# 2. The tests (classified in step 0) ---------------------------------------------------------------
mkdir -p tests/unit tests/db tests/live
for kind in unit db live; do
  [ -e "tests/$kind/__init__.py" ] || { : >"tests/$kind/__init__.py"; git add "tests/$kind/__init__.py"; }
done
: >/tmp/layout-test-moves.txt
for f in tests/test_*.py; do
  if grep -qx "$f" /tmp/layout-live.txt; then kind=live
  elif grep -qx "$f" /tmp/layout-db.txt; then kind=db
  else kind=unit; fi
  git mv "$f" "tests/$kind/$(basename "$f")"
  echo "tests/$kind/$(basename "$f")" >>/tmp/layout-test-moves.txt
done

# 3. Rewrite references ------------------------------------------------------------------------------
$PY - <<'PYTHON'
import ast
import os
import re
from pathlib import Path


def dotted(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


pairs = [line.split() for line in Path(os.environ["MOVES_FILE"]).read_text().splitlines()]
dir_pairs = [line.split() for line in Path(os.environ["DIRS_FILE"]).read_text().splitlines()]
MODULES = {dotted(old): dotted(new) for old, new in pairs}
# Packages that disappear: wad.inbound, wad.outbound (their __init__ moved above).
PATHS = {old: new for old, new in pairs}
PATHS.update({old + "/": new + "/" for old, new in dir_pairs})
PATHS.update({"wad/inbound/": "wad/org/inbound/", "wad/outbound/": "wad/org/outbound/"})

# Dotted names anywhere in text (strings, docstrings, `python -m`, entry points, docs): one pass,
# longest name first, so `wad.outbound.cli` wins over `wad.outbound`.
names = sorted(MODULES, key=len, reverse=True)
DOTTED = re.compile(r"(?<![\w.])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])")
paths = sorted(PATHS, key=len, reverse=True)
PATHED = re.compile(r"(?<![\w/.])(" + "|".join(re.escape(p) for p in paths) + r")(?![\w])")


SENTINEL = "  # @@layout-moved@@"


def rewrite_from_imports(text: str) -> str:
    """`from wad import metrics` -> `from wad.observe import metrics`;
    `from wad.inbound import names, parse` -> two imports, the new leaf aliased to the old name."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    lines = text.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        moved = [a for a in node.names if f"{node.module}.{a.name}" in MODULES]
        if not moved:
            continue
        kept = [a for a in node.names if a not in moved]
        indent = re.match(r"\s*", lines[node.lineno - 1]).group(0)
        out = []
        if kept:
            module = DOTTED.sub(lambda m: MODULES[m.group(1)], node.module)
            out.append(f"{indent}from {module} import "
                       + ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in kept)
                       + SENTINEL)
        for a in moved:
            new = MODULES[f"{node.module}.{a.name}"]
            parent, _, leaf = new.rpartition(".")
            local = a.asname or a.name
            out.append(f"{indent}from {parent} import {leaf}"
                       + (f" as {local}" if local != leaf else "") + SENTINEL)
        edits.append((node.lineno, node.end_lineno, "\n".join(out) + "\n"))
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1:end] = [new]
    return "".join(lines)


def rewrite(path: Path) -> None:
    text = path.read_text()
    new = text
    if path.suffix == ".py":
        new = rewrite_from_imports(new)
    # Generated import lines already name the new modules (`wad.org.outbound` is then the new
    # package, not the old module of that name): leave them alone, then drop the marker.
    new = "".join(line if SENTINEL in line
                  else PATHED.sub(lambda m: PATHS[m.group(1)],
                                  DOTTED.sub(lambda m: MODULES[m.group(1)], line))
                  for line in new.splitlines(keepends=True))
    new = new.replace(SENTINEL, "")
    if path.suffix == ".py" and path.parent.name in ("unit", "db", "live") \
            and path.parent.parent.name == "tests":
        # One directory deeper: files found next to the tests are one `.parent` further.
        new = re.sub(r"Path\(__file__\)(\.resolve\(\))?\.parent", r"Path(__file__)\1.parent.parent",
                     new)
    if new != text:
        path.write_text(new)


skip = {".git", ".venv", "node_modules", "var", "build"}
for root, dirs, files in os.walk("."):
    dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
    for name in files:
        if name.endswith((".py", ".md", ".toml", ".service", ".cfg", ".ini", ".txt", ".sh")) \
                or name == "Makefile":
            rewrite(Path(root, name))

# The status page's assets moved with it (package data).
pp = Path("pyproject.toml")
pp.write_text(pp.read_text().replace('"api/static/*"', '"api/routes/static/*"'))
PYTHON

# The test selection of `make check` now has directories to lean on as well; the markers stay.
.venv/bin/ruff check --fix --quiet wad plugins tests bench || true
git add -A wad tests plugins bench docs README.md pyproject.toml Makefile config systemd 2>/dev/null || true
echo "moved $(( ${#WAD_MOVES[@]} / 2 )) modules of wad/ and $(wc -l </tmp/layout-test-moves.txt) test modules; review with git status, then run the checks"
rm -f "$MOVES_FILE" "$DIRS_FILE"
