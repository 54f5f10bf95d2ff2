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

    pl = sub.add_parser("plan", help="each cell of the grid (profile, filters) as done, "
                        "missing, stale or failed, with the estimated time left")
    co = sub.add_parser("compute", help="run the missing, failed and stale cells of the grid "
                        "(profile, filters), longest first, one line per finished cell")
    for p in (pl, co):
        p.add_argument("--profile", default="smoke")
        p.add_argument("--data-root", default="")
        for name in ("paper", "table", "dataset", "category", "experiment"):
            p.add_argument(f"--{name}", default=None)
        p.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2 (every "
                       "cell with these seeds; default: the claim cells with the profile's "
                       "claim seeds, the others seed 0)")
    pl.add_argument("--status", default=None, help="only cells of this status, e.g. missing")
    pl.add_argument("--bench-device", default="auto",
                    help="paper profile: estimate cells without records from the throughput "
                    "measured by `python -m repro.bench_train` on this kind of device (cuda, "
                    "cuda-converted: the CPU figures converted by latency ratios, cpu; auto: "
                    "the first of these that exists)")
    co.add_argument("--executor", default="local",
                    help="local (one cell after another), ray or slurm")
    co.add_argument("--gpus-per-cell", type=float, default=None,
                    help="ray/slurm: GPUs per cell (fractional for ray; default 1 with "
                    "--device cuda, else 0)")
    co.add_argument("--cpus-per-cell", type=int, default=None,
                    help="CPUs and torch threads per cell (default: local keeps this "
                    "process's, ray and slurm 1)")
    co.add_argument("--partition", default=None, help="slurm partition")
    co.add_argument("--mem", default=None, help="slurm memory per cell, e.g. 32G")
    co.add_argument("--time-limit-min", type=int, default=None,
                    help="slurm time limit (default: twice the longest cell's estimate)")
    co.add_argument("--slurm-cluster", default=None,
                    help="'local': run the job array as local processes (no Slurm)")
    co.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    co.add_argument("--retries", type=int, default=1, help="attempts after a failure")
    stale = co.add_mutually_exclusive_group()
    stale.add_argument("--recompute-stale", dest="keep_stale", action="store_false",
                       help="recompute cells whose record has another config, data or code "
                       "version (the default)")
    stale.add_argument("--keep-stale", dest="keep_stale", action="store_true",
                       help="leave cells whose record has another config, data or code "
                       "version alone")
    co.set_defaults(keep_stale=False)

    pr = sub.add_parser("predict", help="score images with a finished run: heat-map overlays "
                        "and a CSV of image scores with the run's threshold")
    pr.add_argument("--run", required=True, help="a record file (results/<profile>/runs/"
                    "<cell>.json) or a cell's slug, e.g. n2n__main__mpdd__metal_plate__default"
                    "__seed0")
    pr.add_argument("images", nargs="+", help="image files (png, jpg, bmp, tif)")
    pr.add_argument("--out", required=True, help="folder for scores.csv and the overlays")
    pr.add_argument("--profile", default="smoke", help="where to look a slug up")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--score", default="", help="PUAD: puad (default) or efficientad")

    for name, what in (("puad-from-anomalib", "PUAD's Mahalanobis score on a trained anomalib "
                        "EfficientAD checkpoint: EfficientAD vs PUAD AUROCs on your data"),
                       ("pouta-from-anomalib", "a trained anomalib DRAEM checkpoint as POUTA's "
                        "vanilla row, scored by our code on your data")):
        imp = sub.add_parser(name, help=what)
        imp.add_argument("checkpoint", help="the .ckpt of anomalib's Lightning module")
        imp.add_argument("--data-root", required=True)
        imp.add_argument("--dataset", required=True, help="e.g. mvtec_loco, mvtec_ad, folder")
        imp.add_argument("--category", required=True)
        imp.add_argument("--device", default="auto")
        imp.add_argument("--image-size", type=int, default=256)

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
        elif args.command == "plan":
            from . import bench_train
            from .grid import format_plan, plan

            kinds = ("cuda", "cuda-converted", "cpu") if args.bench_device == "auto" \
                else (args.bench_device,)
            found = next((b for k in kinds if (b := bench_train.load(k))), None)
            bench, note = (found[0], f"{found[1].name} ({found[0]['device']})") if found \
                else (None, "")
            rows = plan(args.profile, args.data_root, bench=bench, paper=args.paper,
                        table=args.table, dataset=args.dataset, category=args.category,
                        experiment=args.experiment, seeds=parse_seeds(args.seeds))
            if args.status:
                rows = [r for r in rows if r.status == args.status]
            print(format_plan(rows, args.profile, note))
        elif args.command == "compute":
            from .compute import compute

            gpus = args.gpus_per_cell
            if gpus is None:
                gpus = 1.0 if args.device.startswith("cuda") else 0.0
            outcomes = compute(args.profile, args.data_root, executor=args.executor,
                               device=args.device, retries=args.retries, gpus_per_cell=gpus,
                               cpus_per_cell=args.cpus_per_cell, partition=args.partition,
                               mem=args.mem, time_limit_min=args.time_limit_min,
                               slurm_cluster=args.slurm_cluster,
                               recompute_stale=not args.keep_stale, paper=args.paper,
                               table=args.table, dataset=args.dataset, category=args.category,
                               experiment=args.experiment, seeds=parse_seeds(args.seeds))
            failed = [o for o in outcomes if not o.ok]
            if failed:
                print(f"{len(failed)} of {len(outcomes)} cells failed; `python -m repro plan "
                      f"--profile {args.profile} --status failed` lists them", file=sys.stderr)
                return 1
        elif args.command == "predict":
            from .predict import predict

            print(predict(args.run, args.images, args.out, profile=args.profile,
                          device=args.device, score=args.score))
        elif args.command in ("puad-from-anomalib", "pouta-from-anomalib"):
            from . import peers

            fn = peers.puad_from_anomalib if args.command == "puad-from-anomalib" \
                else peers.pouta_vanilla_from_anomalib
            print(json.dumps(fn(args.checkpoint, args.data_root, args.dataset, args.category,
                                device=args.device, image_size=args.image_size), indent=1))
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


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, got {text!r}") from None


if __name__ == "__main__":
    sys.exit(main())
