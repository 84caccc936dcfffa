"""The report's figures (matplotlib, Agg backend): KN scores per CoT setting, outcomes, interventions, conflict,
and the tau curve. Each function reads the analysed numbers and writes one PNG; error bars are the bootstrap
95% intervals."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxkn.experiments.analysis import HOPS, PATTERNS, TARGETS, TAUS  # noqa: E402


def _bars(ax, x, cis, width, label, **kw):
    est = np.array([np.nan if c.get("estimate") is None else c["estimate"] for c in cis], float)
    lo = np.array([np.nan if c.get("low") is None else c["low"] for c in cis], float)
    hi = np.array([np.nan if c.get("high") is None else c["high"] for c in cis], float)
    err = np.nan_to_num(np.stack([est - lo, hi - est]), nan=0.0)
    ax.bar(x, np.nan_to_num(est), width, yerr=err, capsize=3, label=label, **kw)


def _save(fig, path, dpi: int = 90):
    """Every figure is written the same way, and closed so a long run does not accumulate open figures."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def kn_scores(n, s, path):
    r = n["recall"]
    groups = ["single"] + list(s.cot)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, h in zip(axes, HOPS):
        x = np.arange(len(groups))
        _bars(ax, x - 0.2, [r["levels"][f"hop{h}/{g}"] for g in groups], 0.4, "knowledge neurons")
        _bars(ax, x + 0.2, [r["levels"][f"hop{h}/{g}_random"] for g in groups], 0.4, "random control",
              color="lightgray", hatch="//")
        ax.set_xticks(x, ["single hop"] + [f"two-hop\n{g}" for g in s.cot])
        ax.set_title(f"hop {h}")
        ax.axhline(s.tau, ls=":", c="k", lw=0.8)
    axes[0].set_ylabel(f"relative KN score R (CoT: {s.cot_summary})")
    axes[0].legend(fontsize=8)
    _save(fig, path)


def outcomes(n, s, path):
    table = n["outcomes"]["table"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = np.zeros(2)
    for p in PATTERNS:
        vals = np.array([table["correct"][p], table["wrong"][p]], float)
        ax.bar(["correct", "wrong"], vals, bottom=bottom, label=p)
        bottom += vals
    ax.set_ylabel("items (no CoT)")
    ax.set_title("two-hop outcome by recall pattern")
    ax.legend(fontsize=8)
    _save(fig, path)


def interventions(n, s, path):
    iv = n["interventions"]
    kinds = ("enhance", "random_enhance", "suppress", "random_suppress")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(TARGETS))
    for i, k in enumerate(kinds):
        _bars(ax, x + (i - 1.5) * 0.2, [iv[f"{t}/{k}"]["delta_p"] for t in TARGETS], 0.2, k,
              hatch="//" if k.startswith("random") else None)
    ax.set_xticks(x, TARGETS)
    ax.axhline(0, c="k", lw=0.8)
    ax.set_ylabel("change of P(answer)")
    ax.set_title("interventions on knowledge neurons (no CoT)")
    ax.legend(fontsize=8)
    _save(fig, path)


def conflict(n, s, path):
    cf = n["conflict"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(HOPS))
    _bars(axes[0], x - 0.2, [cf[f"hop{h}"]["change"] for h in HOPS], 0.4, "knowledge neurons")
    _bars(axes[0], x + 0.2, [cf[f"hop{h}"]["change_random"] for h in HOPS], 0.4, "random control",
          color="lightgray", hatch="//")
    axes[0].set_xticks(x, [f"counterfactual hop {h}" for h in HOPS])
    axes[0].axhline(0, c="k", lw=0.8)
    axes[0].set_ylabel("change of R of the true fact")
    axes[0].legend(fontsize=8)
    for i, f in enumerate(("true", "counterfactual", "other")):
        _bars(axes[1], x + (i - 1) * 0.27, [cf[f"hop{h}"]["follows"][f] for h in HOPS], 0.27, f)
    axes[1].set_xticks(x, [f"counterfactual hop {h}" for h in HOPS])
    axes[1].set_ylabel("share of answers following")
    axes[1].legend(fontsize=8)
    _save(fig, path)


def tau_curve(n, s, path):
    r = n["recall"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for h in HOPS:
        for c in s.cot:
            ys = [np.nan if v is None else v for v in r["tau_curve"][f"hop{h}/{c}"]]
            line, = ax.plot(TAUS, ys, marker="o", ms=3, label=f"hop {h}, {c}")
            ys_r = [np.nan if v is None else v for v in r["tau_curve"][f"hop{h}/{c}_random"]]
            ax.plot(TAUS, ys_r, ls=":", c=line.get_color())
    ax.set_xlabel("tau")
    ax.set_ylabel("share recalled (dotted: random control)")
    ax.legend(fontsize=7)
    _save(fig, path)


def draw_all(numbers, table, settings, folder: Path) -> list[str]:
    """Writes every figure into `folder`; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, fn in (("kn_scores.png", kn_scores), ("outcomes.png", outcomes), ("interventions.png", interventions),
                     ("conflict.png", conflict), ("tau_curve.png", tau_curve)):
        fn(numbers, settings, folder / name)
        names.append(name)
    return names
