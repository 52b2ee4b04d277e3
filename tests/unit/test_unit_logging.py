"""Logging belongs to the host: no gateway module configures it when imported, and every logger is `gateway.*`.

The Functions host (and locally devtools/functions_host) owns the handlers and the levels. A module
that set a level or added a handler as it was imported would change them for whatever imports it,
tests included, in an order nobody chose. The gateway's one change is made by an explicit call at
startup (`telemetry.configure`, from function_app.py): the Azure SDKs' request logging is quieted.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import shared
from shared import telemetry
from tests.unit.world import settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
_SENTINEL_LEVEL = 7  # a level nothing sets: any setLevel while watched shows


def _gateway_modules() -> list[str]:
    return ["function_app", *(m.name for m in pkgutil.walk_packages(shared.__path__, "shared."))]


def _logging_state() -> dict[str, Any]:
    """The root's, `azure`'s, and `gateway`'s and its children's levels, handlers and switches."""
    names = {"", "azure", "gateway", *(n for n in logging.Logger.manager.loggerDict if n.startswith("gateway."))}
    state: dict[str, Any] = {"disable": logging.root.manager.disable}
    for name in sorted(names):
        logger = logging.getLogger(name)
        state[name or "root"] = (logger.level, tuple(logger.handlers), logger.propagate, logger.disabled)
    return state


@contextmanager
def _bare_logging() -> Iterator[dict[str, Any]]:
    """Root without handlers (so a `basicConfig` would add one) and every watched level at a sentinel
    (so any `setLevel` shows); all of it put back afterwards. Yields the state to compare with."""
    watched = [logging.getLogger(name) for name in ("", "azure", "gateway")]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in watched]
    try:
        for logger in watched:
            logger.handlers.clear()
            logger.setLevel(_SENTINEL_LEVEL)
        yield _logging_state()
    finally:
        for logger, level, handlers in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers


def _import(name: str) -> None:
    """What importing the module does, even where an earlier test imported it already: then its
    top-level code runs once more, in a fresh module object (sys.modules keeps the first)."""
    if name not in sys.modules:
        importlib.import_module(name)
        return
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_importing_any_gateway_module_leaves_the_logging_configuration_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """function_app.py's own startup call is recorded instead of made (its effect is the next test's)."""
    startup_calls: list[object] = []
    monkeypatch.setattr(telemetry, "configure", startup_calls.append)
    modules = _gateway_modules()
    assert len(modules) > 40 and "shared.proxy" in modules and "shared.bridge.up" in modules
    with _bare_logging() as before:
        for name in modules:
            _import(name)
        after = _logging_state()
    # A logger first created by an import is fine; one with a level or a handler is not.
    unset = (logging.NOTSET, (), True, False)
    assert {name: value for name, value in after.items() if before.get(name, unset) != value} == {}
    assert len(startup_calls) == 1, "function_app.py calls telemetry.configure once, at startup"


def test_the_startup_call_quiets_the_azure_sdks_request_logging_and_changes_nothing_else() -> None:
    with _bare_logging() as before:
        assert telemetry.configure(settings()) == "none"
        after = _logging_state()
    assert after.pop("azure")[0] == logging.WARNING
    before.pop("azure")
    assert after == before


def _module_loggers(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line, name) of each module-level `... = logging.getLogger(...)`; name None when not a literal."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                and value.func.attr == "getLogger"):
            arg = value.args[0] if value.args else None
            yield node.lineno, arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def test_every_logger_of_the_gateway_is_gateway_or_a_child_of_it() -> None:
    """Not `__name__`: one tree, so one setting on `gateway` reaches every line the gateway logs."""
    sources = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py")),
               *sorted((ROOT / "gatewayctl").rglob("*.py"))]
    found, outside = 0, []
    for path in sources:
        for line, name in _module_loggers(path):
            found += 1
            if name != "gateway" and not (name or "").startswith("gateway."):
                outside.append(f"{path.relative_to(ROOT)}:{line} {name!r}")
    assert found >= 4, "the scan found the gateway's loggers"
    assert outside == []
