"""Command line: ``python -m repro --help``."""

from __future__ import annotations

import argparse
import json
import sys

from .data import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one cell (paper, experiment, dataset, category, "
                         "variant, seed, profile) and print its record's metrics")
    run.add_argument("--paper", required=True)
    run.add_argument("--experiment", required=True)
    run.add_argument("--dataset", required=True)
    run.add_argument("--category", required=True)
    run.add_argument("--variant", default="")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--profile", default="smoke")
    run.add_argument("--data-root", default="", help="default: the profile's (synthetic if none)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    rep = sub.add_parser("reproduce", help="execute the notebooks with papermill into "
                         "results/<profile>/ (results are replaced only on success)")
    rep.add_argument("--profile", default="smoke")
    rep.add_argument("--data-root", default="")
    rep.add_argument("--device", default="auto")
    rep.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")

    sub.add_parser("readme", help="rewrite results/README.md from results/*/tables/")

    syn = sub.add_parser("synthetic", help="write the synthetic datasets to a folder")
    syn.add_argument("out")
    syn.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from .experiments import run_cell

            record = run_cell(args.paper, args.experiment, args.dataset, args.category,
                              variant=args.variant, seed=args.seed, profile=args.profile,
                              data_root=args.data_root, device=args.device)
            print(json.dumps({"key": record["key"], "metrics": record["metrics"],
                              "timings": record["timings"]}, indent=1))
        elif args.command == "reproduce":
            from .pipeline import reproduce

            reproduce(args.profile, data_root=args.data_root, device=args.device,
                      notebooks=args.notebooks or None)
        elif args.command == "readme":
            from .tables import write_results_readme

            print(write_results_readme())
        elif args.command == "synthetic":
            from .data.synthetic import SyntheticSpec, write_all

            print(write_all(args.out, SyntheticSpec(seed=args.seed)))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
