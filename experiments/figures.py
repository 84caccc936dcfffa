"""The report's figures (matplotlib, Agg backend), each written as one PNG under figures/.

Study figures read the analysed numbers (`experiments.analysis.analyse`): levels on both scores, tau curves on
both scores, interventions against every null; error bars are the 95% cluster-bootstrap intervals. Fact-level
figures read `facts_summary`: the shared neurons (facts per neuron), KN counts per layer and the attribution
heatmaps (`jaxkn.plot`), and IG completeness per layer.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxkn.experiments.analysis import HOPS, INTERVENTION_NULLS, SCORE_NULLS, SCORES, STAT, TARGETS, TAUS  # noqa: E402
from jaxkn.plot import attribution_heatmap, kn_counts_per_layer  # noqa: E402


def _bars(ax, x, cis, width, label, **kw):
    est = np.array([np.nan if not c or c.get("estimate") is None else c["estimate"] for c in cis], float)
    lo = np.array([np.nan if not c or c.get("low") is None else c["low"] for c in cis], float)
    hi = np.array([np.nan if not c or c.get("high") is None else c["high"] for c in cis], float)
    err = np.nan_to_num(np.stack([est - lo, hi - est]), nan=0.0)
    ax.bar(x, np.nan_to_num(est), width, yerr=err, capsize=3, label=label, **kw)


def _save(fig, path, dpi: int = 90):
    """Every figure is written the same way, and closed so a long run does not accumulate open figures."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def levels(n, s, path):
    """Single-hop and two-hop levels of each hop on both scores (CoT: the headline summary), nulls beside R."""
    summary = s.cot_summary
    fig, axes = plt.subplots(len(SCORES), len(HOPS), figsize=(10, 6.5), squeeze=False)
    for row, score in enumerate(SCORES):
        rec = n["scores"][score][summary]["recall"]
        groups = ["single"] + list(s.cot)
        for ax, h in zip(axes[row], HOPS):
            x = np.arange(len(groups))
            own = [rec[f"hop{h}/none"]["single"]] + [rec[f"hop{h}/{c}"]["two_hop"] for c in s.cot]
            _bars(ax, x, own, 0.5, f"{STAT[score]} (own set)")
            ax.set_xticks(x, ["single hop"] + [f"two-hop\n{c}" for c in s.cot], fontsize=8)
            ax.axhline(0, c="k", lw=0.8)
            ax.set_title(f"hop {h}, score {score} ({STAT[score]}; CoT: {summary})", fontsize=9)
            markers = {null: [rec[f"hop{h}/{c}"]["recall"]["nulls"][null]["effect"] for c in s.cot]
                       for null in SCORE_NULLS[score]}  # R's nulls: their two-hop levels
            if score == "R":  # the wrong-fact sets' R: high when the KNs are format neurons
                markers["wrong_fact"] = [rec[f"hop{h}/{c}"]["wrong_fact_R"]["two_hop"] for c in s.cot]
            for (null, cells), (marker, colour) in zip(markers.items(), (("o", "tab:green"), ("x", "tab:red"),
                                                                         ("s", "tab:orange"))):
                ax.plot(x[1:], [np.nan if c.get("estimate") is None else c["estimate"] for c in cells],
                        marker=marker, c=colour, ls="", label=f"{null} (two-hop)")
            ax.legend(fontsize=7, loc="lower left")
    _save(fig, path)


def tau_curve(n, s, path):
    """Share recalled over tau on both scores (no CoT and each CoT setting); dotted: the score's nulls."""
    fig, axes = plt.subplots(1, len(SCORES), figsize=(10, 3.6), sharey=True)
    for ax, score in zip(axes, SCORES):
        curves = n["scores"][score][s.cot_summary]["tau_curve"]
        for h in HOPS:
            for c in s.cot:
                ys = [np.nan if v is None else v for v in curves[f"hop{h}/{c}/own"]]
                line, = ax.plot(TAUS, ys, marker="o", ms=3, label=f"hop {h}, {c}")
                for null in SCORE_NULLS[score]:
                    ys = [np.nan if v is None else v for v in curves[f"hop{h}/{c}/{null}"]]
                    ax.plot(TAUS, ys, ls=":" if null == "matched_random" else "--", c=line.get_color(), lw=0.8)
        ax.set_xlabel("tau")
        ax.set_title("recalled-specific (D)" if score == "specific" else "recalled on R (dotted: matched, dashed: "
                     "random)", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("share of hops recalled")
    _save(fig, path)


def interventions(n, s, path):
    """Change of P(answer) under enhance and suppress: the own set and every null set."""
    iv = n["interventions"]
    sets = ("own",) + tuple(INTERVENTION_NULLS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=False)
    for ax, kind in zip(axes, ("enhance", "suppress")):
        x = np.arange(len(TARGETS))
        width = 0.8 / len(sets)
        for i, name in enumerate(sets):
            cis = [iv[f"{t}/{kind}"]["effect"] if name == "own" else iv[f"{t}/{kind}"]["nulls"][name]["effect"]
                   for t in TARGETS]
            _bars(ax, x + (i - (len(sets) - 1) / 2) * width, cis, width, name,
                  hatch=None if name == "own" else "//")
        ax.set_xticks(x, TARGETS)
        ax.axhline(0, c="k", lw=0.8)
        ax.set_title(f"{kind} (x{s.enhance if kind == 'enhance' else s.suppress})")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("change of P(answer)")
    _save(fig, path)


def shared_neurons(shared: list, path):
    """Bar chart: how many facts each shared neuron is refined for."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(shared) + 2), 3.4))
    labels = [f"({a},{b})" for a, b in (entry["neuron"] for entry in shared)]
    ax.bar(np.arange(len(shared)), [entry["facts"] for entry in shared], color="tab:red")
    ax.set_xticks(np.arange(len(shared)), labels, rotation=60, fontsize=7)
    ax.set_ylabel("facts whose refined set holds it")
    ax.set_xlabel("shared neuron (layer, index)")
    ax.set_title("shared neurons (removed from the fact-specific sets)")
    _save(fig, path)


def completeness_per_layer(per_layer_max: list, points: list, tolerance, path):
    """IG completeness error per layer (largest over facts) and the points each layer used."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(per_layer_max) + 2), 3.4))
    layers = np.arange(len(per_layer_max))
    ax.bar(layers, per_layer_max, color="tab:blue", label="max completeness error")
    if tolerance is not None:
        ax.axhline(tolerance, c="k", ls=":", lw=0.8, label=f"tolerance {tolerance}")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("layer")
    ax.set_ylabel("|sum Attr - (P(a) - P(b))|")
    if len(points) == len(per_layer_max):
        twin = ax.twinx()
        twin.plot(layers, points, c="tab:orange", marker=".", label="points used")
        twin.set_ylabel("integration points")
    ax.legend(fontsize=7, loc="upper right")
    _save(fig, path)


def fact_figures(facts_summary: dict, heatmaps: dict, s, folder: Path) -> list[str]:
    """The fact-level figures that have data; returns their file names."""
    names = []
    if facts_summary.get("shared"):
        shared_neurons(facts_summary["shared"], folder / "shared_neurons.png")
        names.append("shared_neurons.png")
    counts = {k: v for k, v in (facts_summary.get("kn_counts_per_layer") or {}).items() if len(v)}
    if counts:
        n_layers = len(next(iter(counts.values())))
        fig = kn_counts_per_layer({k: np.asarray(v) for k, v in counts.items()}, n_layers,
                                  folder / "kn_counts_per_layer.png", title="KNs per layer: refined, specific, shared")
        del fig
        names.append("kn_counts_per_layer.png")
    per_layer = facts_summary.get("completeness_per_layer_max") or []
    if per_layer:
        points = (facts_summary.get("completeness") or {}).get("points_per_layer") or []
        completeness_per_layer(per_layer, points, getattr(s.attribution, "tolerance", None),
                               folder / "completeness_per_layer.png")
        names.append("completeness_per_layer.png")
    for i, (key, spec) in enumerate(heatmaps.items()):
        if not Path(spec["scores_path"]).is_file():
            continue  # `heatmap_index` names it in the report as missing
        name = f"heatmap_{i}.png"
        attribution_heatmap(np.load(spec["scores_path"]), title=spec.get("title") or str(key),
                            neurons=[tuple(nn) for nn in spec.get("neurons", [])], path=folder / name)
        names.append(name)
    return names


def heatmap_index(heatmaps: dict) -> dict:
    """fact key -> {"title", "figure"} (figure None where the scores file is missing), for the report's captions."""
    return {str(key): {"title": spec.get("title") or str(key),
                       "figure": f"heatmap_{i}.png" if Path(spec["scores_path"]).is_file() else None}
            for i, (key, spec) in enumerate(heatmaps.items())}


def draw_all(numbers, table, settings, facts_summary: dict, heatmaps: dict, folder: Path) -> list[str]:
    """Writes every figure that has data into `folder`; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    if numbers.get("n_items"):
        for name, fn in (("levels.png", levels), ("tau_curve.png", tau_curve), ("interventions.png", interventions)):
            fn(numbers, settings, folder / name)
            names.append(name)
    return names + fact_figures(facts_summary, heatmaps, settings, folder)
