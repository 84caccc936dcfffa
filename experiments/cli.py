"""The study's command line, derived from `StudyConfig` (and the `AttributionConfig` it nests).

Every field becomes a flag (`threshold_t` -> `--threshold-t`, plus the aliases it declares), its help is the
field's line in the class docstring with its default, and its type and allowed values come from the field. So a
new setting is one field and one doc line; nothing here names a setting. Values are taken, in order, from the
defaults, `--config FILE.json` (a settings dict or a run's summary.json, which replays that run exactly), and the
flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path

from jaxkn.attribution import BASELINE_FORMS, BASELINES, METHODS, QUADRATURES, AttributionConfig
from jaxkn.experiments.settings import StudyConfig, attribution_from_dict, field_docs
from jaxkn.presets import ATTRIBUTION_KEYS as PRESET_ATTRIBUTION
from jaxkn.presets import FIELDS, resolve
from jaxkn.site import SITES

PRESET_FIELDS = tuple(f for f in FIELDS if f != "attribution")  # threshold_t, refine_rule, share_p, shared_s, ...
ATTRIBUTION_CHOICES = {"site": SITES, "baseline": BASELINES, "baseline_form": BASELINE_FORMS,
                       "quadrature": QUADRATURES, "method": METHODS}


def _base(tp):
    """(scalar type, is_tuple, optional) of a field annotation."""
    args = typing.get_args(tp)
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional, tp = len(rest) < len(args), rest[0]
        args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return args[0], True, optional
    return tp, False, optional


def _converter(scalar, is_tuple: bool, optional: bool):
    def convert(text: str):
        if optional and text.lower() in ("none", ""):
            return None
        if is_tuple:
            return tuple(scalar(x.strip()) for x in text.split(",") if x.strip())
        return scalar(text)

    return convert


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _add_fields(group, cls, defaults, choices_of, dests: dict):
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] is AttributionConfig:
            continue
        scalar, is_tuple, optional = _base(hints[f.name])
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        names = (flag, *f.metadata.get("aliases", ()))
        choices = choices_of(f)
        default = getattr(defaults, f.name)
        text = f"{docs.get(f.name, '')} (default: {_show(default)})"
        if choices:
            text += f" [choices: {', '.join(map(str, choices))}]"
        dest = f"{cls.__name__}.{f.name}"
        dests[dest] = (cls, f.name)
        if scalar is bool:
            group.add_argument(*names, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:  # SUPPRESS: a flag not given is absent, so "--tolerance none" (a given None) is an override
            group.add_argument(*names, dest=dest, type=_converter(scalar, is_tuple, optional),
                               default=argparse.SUPPRESS, metavar=f.name.upper(), help=text)


def parser(prog: str = "python -m jaxkn.experiments.two_hop", description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--out", default=None, help="results folder (default two_hop_results/)")
    run.add_argument("--resume", action="store_true", help="continue a run in --out: done items and facts are kept")
    run.add_argument("--distributed", action="store_true", help="multi-host: each host studies its share")
    run.add_argument("--config", default=None, help="settings from a JSON file: a settings dict or a run's "
                                                    "summary.json (replays that run's settings exactly)")
    dests: dict = {}
    d = StudyConfig()
    _add_fields(p.add_argument_group("study"), StudyConfig, d, lambda f: f.metadata.get("choices"), dests)
    _add_fields(p.add_argument_group("attribution (jaxkn.AttributionConfig)"), AttributionConfig, d.attribution,
                lambda f: ATTRIBUTION_CHOICES.get(f.name), dests)
    p.set_defaults(_dests=dests)
    return p


def read_config_file(path: str | Path) -> dict:
    """Settings from a JSON file: {"settings": {...}} (a summary.json) or a plain settings dict."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: not JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("settings"), dict):
        data = data["settings"]
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of settings")
    return data


def settings_from_args(args: argparse.Namespace) -> StudyConfig:
    """The `StudyConfig` of parsed arguments: the preset's values < --config < flags; errors name the setting.

    A replayed summary.json carries its preset and every value, so it reproduces that run exactly; settings given
    beside a preset that change its values are recorded in `preset_overrides` (METHOD §10).
    """
    values = read_config_file(args.config) if args.config else {}
    values.pop("preset_overrides", None)
    attribution = dict(values.pop("attribution", None) or {})
    for dest, (cls, name) in args._dests.items():
        if not hasattr(args, dest):
            continue
        given = getattr(args, dest)
        if cls is AttributionConfig:
            attribution[name] = given
        else:
            values[name] = given
    name = values.get("preset") or StudyConfig().preset
    covered = {k: values[k] for k in PRESET_FIELDS if k in values}
    covered.update({k: attribution[k] for k in PRESET_ATTRIBUTION if k in attribution})
    preset_values, overridden = resolve(name, covered)
    values.update({k: preset_values[k] for k in PRESET_FIELDS})
    attribution = {**StudyConfig().attribution.to_dict(), **preset_values["attribution"], **attribution}
    if preset_values["refine_rule"] == "none":
        values["kn_set"] = "coarse"
    values.update(preset=name, preset_overrides=tuple(overridden), attribution=attribution_from_dict(attribution))
    return StudyConfig.from_dict(values)
