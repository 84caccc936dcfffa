"""Command line for two-hop datasets.

    python -m jaxkn.data build --out geo.json.gz [--seed 0] [--n-items 1000] [--relations city_country->capital ...]
    python -m jaxkn.data build --out geo.json --plain      # the bare TFRKN list (+ geo.json.meta.json)
    python -m jaxkn.data stats FILE                        # TFRKN, jaxkn-built or MQuAKE file

Errors in the input (a missing or malformed file, bad records) print one message and exit with status 2; every
bad record is listed. --debug shows the traceback.

`build` writes jaxkn's built-file object ({"format": "tfrkn", "metadata": ..., "items": [TFRKN records]}); the
metadata carries the GeoNames CC BY 4.0 attribution. `--plain` writes the bare list and the metadata beside it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from jaxkn.cli import add_debug_flag, run_cli
from jaxkn.data.builder import build_items, build_metadata, pair_name, parse_pair
from jaxkn.data.loaders import load_items, load_metadata, save_items
from jaxkn.data.relations import RELATION_PAIRS
from jaxkn.errors import UserInputError

PROG = "python -m jaxkn.data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a TFRKN-format dataset from the installed geography packages")
    build.add_argument("--out", required=True, help="output path (.json or .json.gz)")
    build.add_argument("--seed", type=int, default=0, help="picks phrasings and the subset (default 0)")
    build.add_argument("--n-items", type=int, default=None, help="sample this many items (default: all)")
    build.add_argument("--relations", nargs="+", default=None, metavar="R1->R2",
                       help="relation pairs (default: all): " + " ".join(pair_name(p) for p in RELATION_PAIRS))
    build.add_argument("--cities-per-country", type=int, default=5)
    build.add_argument("--min-city-population", type=int, default=100_000)
    build.add_argument("--plain", action="store_true", help="write the bare TFRKN list; metadata to FILE.meta.json")
    build.add_argument("--overwrite", action="store_true", help="replace existing output files")
    stats = sub.add_parser("stats", help="count items per relation pair of a dataset file")
    stats.add_argument("path")
    return parser


def _check_outputs(args) -> None:
    """Refuses to replace existing files without --overwrite, before the (slow) build."""
    outputs = [Path(args.out)] + ([Path(f"{args.out}.meta.json")] if args.plain else [])
    for path in outputs:
        if path.is_dir():
            raise IsADirectoryError(f"--out {path} is a folder; give a file path (.json or .json.gz)")
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another --out")


def _build(args) -> None:
    try:
        pairs = [parse_pair(p) for p in args.relations] if args.relations else list(RELATION_PAIRS)
    except ValueError as e:  # an unknown pair is the user's input, reported as such
        raise UserInputError(f"--relations: {e}") from None
    _check_outputs(args)
    settings = dict(cities_per_country=args.cities_per_country, min_city_population=args.min_city_population)
    items = build_items(seed=args.seed, n_items=args.n_items, pairs=pairs, **settings)
    metadata = build_metadata(items, seed=args.seed, n_items=args.n_items, pairs=pairs, **settings)
    if args.plain:
        path = save_items(items, args.out)
        Path(f"{args.out}.meta.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    else:
        path = save_items(items, args.out, metadata)
    print(f"wrote {len(items)} items to {path}")
    for name, n in metadata["counts"].items():
        print(f"  {name}: {n}")


def _stats(args) -> None:
    items = load_items(args.path)
    counts = Counter(f"{it.two_hop_id[0][1]}->{it.two_hop_id[1][1]}" for it in items)
    queries = [len(it.fact1_query) + len(it.fact2_query) for it in items]
    print(f"{args.path}: {len(items)} items, {sum(queries) / max(1, len(items)):.1f} queries per item")
    for name, n in counts.most_common():
        print(f"  {name}: {n}")
    attribution = load_metadata(args.path).get("attribution")
    if attribution:
        print(f"attribution: {attribution}")


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    _build(args) if args.command == "build" else _stats(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status (2 for a user error)."""
    return run_cli(_main, argv, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(main())
