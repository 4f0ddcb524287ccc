"""The whatsapp-web.js the conformance suite runs is the locked release, unmodified: the tarball
npm serves matches the lock file's integrity hash, and every file installed in node_modules is
byte-for-byte the tarball's."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

from tests.conformance.wwebjs import HERE, PACKAGE


def test_installed_whatsapp_web_js_is_the_locked_release_unmodified(tmp_path: Path):
    lock = json.loads((HERE / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/whatsapp-web.js"]
    version, integrity = entry["version"], entry["integrity"]
    # Pinned to one exact version, not a range.
    assert json.loads((HERE / "package.json").read_text())["dependencies"]["whatsapp-web.js"] \
        == version

    out = subprocess.run(
        ["npm", "pack", f"whatsapp-web.js@{version}", "--pack-destination", str(tmp_path),
         "--json", "--prefer-offline", "--ignore-scripts"],
        cwd=HERE, capture_output=True, text=True, timeout=120, check=True)
    tarball = tmp_path / json.loads(out.stdout)[0]["filename"]
    algorithm, expected = integrity.split("-", 1)
    assert base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode() \
        == expected, "the registry's tarball does not match package-lock.json"

    with tarfile.open(tarball) as tar:
        released = {m.name.removeprefix("package/"): tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}
    installed = {p.relative_to(PACKAGE).as_posix(): p.read_bytes()
                 for p in PACKAGE.rglob("*")
                 if p.is_file() and "node_modules" not in p.relative_to(PACKAGE).parts}
    assert sorted(installed.keys() - released.keys()) == [], "files added to the package"
    assert sorted(released.keys() - installed.keys()) == [], "files missing from the package"
    assert [name for name in released if released[name] != installed[name]] == [], \
        "files of the package were changed"
