"""Every hook is typed, documented in its docstring and in docs/plugins.md with an example, and has
a test of its own (HOOK_TESTS says which)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from wad import hookspecs
from wad.plugins import PluginManager

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "plugins.md"
TESTS = DOCS.parent.parent / "tests"

HOOK_TESTS: dict[str, str] = {
    "wad_plugin_config_type":
        "test_plugins.py::test_plugin_config_type_decodes_and_validates_the_plugins_table",
    "wad_background_tasks":
        "test_plugins.py::test_background_tasks_run_and_restart_after_a_crash",
    "wad_detect_language":
        "test_plugins.py::test_language_detection_is_a_plugin_that_others_override",
    "wad_detect_status":
        "test_plugins.py::test_detect_status_asks_in_order_and_the_first_confident_answer_wins",
    "wad_agent_reply":
        "test_plugins.py::test_agent_reply_first_answer_wins_and_is_named",
    "wad_import_sources":
        "test_plugins.py::test_import_sources_are_found_by_name",
    "wad_message_received":
        "test_plugins.py::test_notification_reaches_every_plugin[wad_message_received]",
    "wad_message_sent":
        "test_plugins.py::test_notification_reaches_every_plugin[wad_message_sent]",
    "wad_message_status_changed":
        "test_plugins.py::test_notification_reaches_every_plugin[wad_message_status_changed]",
    "wad_session_status_changed":
        "test_plugins.py::test_notification_reaches_every_plugin[wad_session_status_changed]",
    "wad_client_status_changed":
        "test_plugins.py::test_notification_reaches_every_plugin[wad_client_status_changed]",
}
"""Which test covers each hook. The bundled plugins' tests cover them again through real use."""


def hook_names() -> list[str]:
    """The hooks wad declares, as pluggy sees them."""
    pm = PluginManager()
    return sorted(name for name in vars(pm.hook) if not name.startswith("_"))


def docs_sections() -> dict[str, str]:
    """`### wad_...` sections of docs/plugins.md, by hook name."""
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^### (\S+)\s*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)
            if parts[i].startswith("wad_")}


def test_hooks_are_the_ones_in_hookspecs() -> None:
    declared = sorted(name for name, value in vars(hookspecs).items()
                      if callable(value) and hasattr(value, "wad_spec"))
    assert hook_names() == declared
    assert len(declared) >= 11


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_typed_and_has_a_docstring(name: str) -> None:
    function = getattr(hookspecs, name)
    signature = inspect.signature(function)
    assert all(p.annotation is not inspect.Parameter.empty
               for p in signature.parameters.values()), name
    assert signature.return_annotation is not inspect.Signature.empty, name
    assert function.__doc__
    assert len(function.__doc__.strip()) > 40


def test_every_hook_is_documented_with_an_example() -> None:
    sections = docs_sections()
    assert sorted(sections) == hook_names()  # none missing, none stale
    for name, body in sections.items():
        examples = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
        assert examples, f"{name} has no example"
        assert any("@hookimpl" in e and f"def {name}(" in e for e in examples), name
        for example in examples:
            compile(example, f"docs/plugins.md#{name}", "exec")
        assert "Receives:" in body, name
        assert "Returns:" in body, name


def module_of_test(filename: str) -> str:
    """The dotted name of the test module `filename`, wherever under tests/ it lives."""
    found = sorted(TESTS.rglob(filename))
    assert len(found) == 1, f"{filename}: {len(found)} files of that name under tests/"
    return ".".join(found[0].relative_to(TESTS.parent).with_suffix("").parts)


def test_every_hook_has_a_test() -> None:
    assert sorted(HOOK_TESTS) == hook_names()
    for hook, test_id in HOOK_TESTS.items():
        filename, _, test = test_id.partition("::")
        function_name, _, param = test.partition("[")
        module = importlib.import_module(module_of_test(filename))
        function = getattr(module, function_name, None)
        assert callable(function), f"{hook}: {test_id} does not exist"
        if param:
            values = [value for mark in getattr(function, "pytestmark", [])
                      if mark.name == "parametrize" for value in mark.args[1]]
            assert param.rstrip("]") in values, f"{hook}: {test_id} is not a parametrization"
