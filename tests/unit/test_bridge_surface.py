"""The bridge uses only what whatsapp-web.js (pinned in tests/conformance) uses, or what
docs/bridge.md names with a reason; and the checker that says so catches a stray module."""

from __future__ import annotations

from pathlib import Path

import pytest

from wad.browser import surface

BRIDGE_TEXT = surface.BRIDGE.read_text(encoding="utf-8")
ALLOWED = surface.allowlist(surface.ALLOWLIST.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def peer() -> surface.Uses:
    return surface.peer_uses()


def with_code(text: str, code: str) -> str:
    """The bridge with `code` added after its SURFACE table."""
    marker = "// surface:end\n"
    assert marker in text
    return text.replace(marker, marker + code + "\n", 1)


def with_surface(text: str, entry: str) -> str:
    """The bridge with one more SURFACE entry (`"Module": {...}`)."""
    head = "const SURFACE = {\n"
    assert head in text
    return text.replace(head, head + "    " + entry + ",\n", 1)


def test_the_bridge_stays_inside_what_whatsapp_web_js_uses() -> None:
    assert surface.check_files() == []


def test_the_peer_sources_are_read(peer: surface.Uses) -> None:
    # What whatsapp-web.js 1.34.7 is known to use, through each way it reaches a module.
    assert "addAndSendMsgToChat" in peer["WAWebSendMsgChatAction"]  # window.require(X).member
    assert "getIsMyContact" in peer["WAWebFrontendContactGetters"]  # const {a} = require(X)
    assert "sendChatStatePaused" in peer["WAWebChatStateBridge"]  # const X = require(X); X.a
    assert "startAltLinkingFlow" in peer["WAWebAltDeviceLinkingApi"]  # window.AuthStore alias
    assert "waNoiseInfo" in peer["WAWebSignalStoreApi"]  # spread into one AuthStore object
    assert "WAWebNotARealModule" not in peer


def test_a_module_unknown_to_whatsapp_web_js_fails(peer: surface.Uses) -> None:
    text = with_surface(BRIDGE_TEXT, '"WAWebSimOnlyThing": {"poke": "function"}')
    text = with_code(text, "  const poked = () => mod('WAWebSimOnlyThing').poke();")
    assert surface.check(text, peer, ALLOWED) == [
        "WAWebSimOnlyThing: module not used by whatsapp-web.js"]


def test_a_member_unknown_to_whatsapp_web_js_fails(peer: surface.Uses) -> None:
    entry = '"WAWebCmd": {"Cmd": "model",'
    assert entry in BRIDGE_TEXT
    text = BRIDGE_TEXT.replace(entry, entry + ' "simOnly": "function",', 1)
    assert surface.check(text, peer, ALLOWED) == [
        "WAWebCmd.simOnly: member not used by whatsapp-web.js"]


def test_a_module_declared_twice_is_refused() -> None:
    text = with_surface(BRIDGE_TEXT, '"WAWebCmd": {"Cmd": "model"}')
    with pytest.raises(surface.SurfaceError, match="WAWebCmd"):
        surface.declared_surface(text)


def test_code_outside_the_surface_table_fails(peer: surface.Uses) -> None:
    # Used through an alias, as the bridge's code does, without declaring it.
    text = with_code(BRIDGE_TEXT, "  const wap = mod('WAWap');\n  wap.generateId();")
    assert surface.check(text, peer, ALLOWED) == [
        "WAWap is used by the bridge's code but not declared in SURFACE"]
    text = with_code(BRIDGE_TEXT, "  mod('WAWebCollections').Blocklist.get('x');")
    assert surface.check(text, peer, ALLOWED) == [
        "WAWebCollections.Blocklist is used by the bridge's code but not declared in SURFACE"]


def test_the_allowlist_admits_a_named_item_with_its_reason(peer: surface.Uses) -> None:
    text = with_surface(BRIDGE_TEXT, '"WAWebSimOnlyThing": {"poke": "function"}')
    doc = (f"{surface.ALLOWLIST_HEADING}\n\n- `WAWebSimOnlyThing`: needed for X, which "
           "whatsapp-web.js does not offer\n\n## Next\n- `WAWebOther`: not in the section\n")
    allowed = surface.allowlist(doc)
    assert allowed == {"WAWebSimOnlyThing": "needed for X, which whatsapp-web.js does not offer"}
    assert surface.check(text, peer, allowed) == []


def test_missing_peer_sources_are_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(surface.SurfaceError, match="npm ci"):
        surface.peer_uses(tmp_path)
