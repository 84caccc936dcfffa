"""Formatting of intervals and numbers in the study's report (shared by the summary and the claim sections)."""

from __future__ import annotations


def _fmt(ci: dict | None, pct: bool = False) -> str:
    if not ci or ci.get("estimate") is None:
        return "n/a"
    f = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%") if pct else (lambda v: "n/a" if v is None else
                                                                           f"{v:+.3f}")
    return f"{f(ci['estimate'])} [{f(ci['low'])}, {f(ci['high'])}] (n={ci['n']})"
