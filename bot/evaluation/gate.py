"""The CI gate: thresholds per suite (eval/thresholds.toml) checked against a run's metrics."""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.core.errors import EvalSuiteError

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------------------
@dataclass
class GateResult:
    """Which thresholds a run met and which it missed."""

    suite: str
    checks: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c["ok"] for c in self.checks)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The checks that failed."""
        return [c for c in self.checks if not c["ok"]]


def load_thresholds(path: Path | str) -> dict[str, Any]:
    """Read eval/thresholds.toml with a clear error for a missing or malformed file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise EvalSuiteError(f"Thresholds file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvalSuiteError(f"{path} is not valid TOML: {exc}") from None
    for name, section in [("default", data.get("default", {}))] + list(data.get("suite", {}).items()):
        for kind in ("min", "max"):
            for metric, value in (section.get(kind) or {}).items():
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise EvalSuiteError(f"{path}: [{name}] {kind}.{metric} must be a number, got {value!r}")
    return data


def gate(run: dict[str, Any], thresholds: dict[str, Any], suite: str | None = None) -> GateResult:
    """Check a run's metrics against [default] plus the [suite.<name>] section for its suite (file stem)."""
    suite = suite or run.get("config", {}).get("suite_name") or ""
    sections = [thresholds.get("default", {})]
    if suite in thresholds.get("suite", {}):
        sections.append(thresholds["suite"][suite])
    metrics = run["metrics"]
    checks: list[dict[str, Any]] = []
    limits: dict[tuple[str, str], float] = {}
    for section in sections:  # a suite section overrides the default for the same metric
        for kind in ("min", "max"):
            for metric, value in (section.get(kind) or {}).items():
                limits[(metric, kind)] = float(value)
    for (metric, kind), limit in limits.items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append(
                {
                    "metric": metric,
                    "kind": kind,
                    "limit": limit,
                    "value": None,
                    "ok": False,
                    "message": f"{metric} was not measured in this run (needed {kind} {limit})",
                }
            )
            continue
        ok = value >= limit if kind == "min" else value <= limit
        op = ">=" if kind == "min" else "<="
        checks.append(
            {
                "metric": metric,
                "kind": kind,
                "limit": limit,
                "value": value,
                "ok": ok,
                "message": f"{metric} = {value} (needs {op} {limit})",
            }
        )
    return GateResult(suite, checks)
