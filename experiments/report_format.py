"""Formatting of intervals, shares and verdicts in the study's report (shared by the summary and the claim sections)."""

from __future__ import annotations

NULL_WORDS = {"wrong_fact": "wrong-fact", "matched_random": "matched random", "random": "same-count random",
              "shared": "shared-neuron", "none": "no"}


def _fmt(ci: dict | None, pct: bool = False) -> str:
    """"+0.412 [+0.301, +0.530] (n=24)", "n/a" when undefined."""
    if not ci or ci.get("estimate") is None:
        return "n/a"
    f = (lambda v: "n/a" if v is None else f"{100 * v:.1f}%") if pct else (lambda v: "n/a" if v is None else
                                                                           f"{v:+.3f}")
    return f"{f(ci['estimate'])} [{f(ci['low'])}, {f(ci['high'])}] (n={ci['n']})"


def share(w: dict | None) -> str:
    """A Wilson share: "2/5: 40.0% [11.8%, 76.9%] (too few to tell)"; "0/0: n/a" when nothing is counted."""
    if not w or not w.get("n"):
        return "0/0: n/a"
    body = f"{w['k']}/{w['n']}: {100 * w['estimate']:.1f}% [{100 * w['low']:.1f}%, {100 * w['high']:.1f}%]"
    return f"{body} ({w['label']})" if w.get("label") else body


def verdict_text(v: dict) -> str:
    """"**reproduced** (null: wrong-fact, score: specific)"."""
    return f"**{v['verdict']}** (null: {v['null']}, score: {v.get('score', '?')})"
