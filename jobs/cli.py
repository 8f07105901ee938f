"""The `autt` command line: parse, build the config, run a job, summarise.

In: argv. Out: tables under ``--out`` and a short summary on stdout; exit code 0 on
success, 1 when shards failed, 2 on a configuration or manifest error (printed as one
line naming the bad key, value or file).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import Config, ConfigError, load_config

# flag -> config key; a flag left unset does not override the config file
FLAGS = {
    "out": "run.out", "executor": "run.executor", "ray_address": "run.ray_address",
    "num_cpus": "run.num_cpus", "workers": "run.workers", "manifest": "ingest.manifest",
    "split": "ingest.split", "classes": "ingest.classes", "dataset": "ingest.dataset",
    "root": "ingest.root", "pattern": "ingest.pattern",
}
SWITCHES = {"recompute": "run.recompute", "retry_failed": "run.retry_failed",
            "strict": "run.strict", "quiet": "run.progress"}


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("--config", help="YAML file, or a shipped config name (e.g. biovid)")
    p.add_argument("--out", help="workspace root (local path, memory://, s3://)")
    p.add_argument("--executor", choices=["ray", "local"], help="run shards on Ray (default) "
                   "or in this process")
    p.add_argument("--ray-address", help="join this Ray cluster ('auto' or host:port)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    p.add_argument("--workers", type=int, help="actors per stage")
    p.add_argument("--recompute", action="store_true", help="redo shards whose config or "
                   "inputs changed instead of refusing")
    p.add_argument("--retry-failed", action="store_true", help="re-run failed samples")
    p.add_argument("--strict", action="store_true", help="abort on the first bad sample")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. faces.min_prob=0.95 or root=/data/biovid")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="autt", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="manifest or dataset -> OUT/manifest")
    p.add_argument("--manifest", help="CSV or Parquet manifest")
    p.add_argument("--split", help="CSV or Parquet split file: subject_id, role")
    p.add_argument("--classes", help="ordered class list, positive last: neutral,pain")
    p.add_argument("--dataset", choices=["manifest", "biovid", "stressid", "bah", "pattern"])
    p.add_argument("--root", help="dataset root for --dataset")
    p.add_argument("--pattern", help="--dataset pattern: e.g. '{subject}/{label}/{video}.mp4'")
    _common(p)

    p = sub.add_parser("faces", help="decode, detect, track, crop -> OUT/faces")
    _common(p)
    p = sub.add_parser("embed", help="frozen CLIP image tower -> OUT/embeddings/<backbone>")
    p.add_argument("--fused", action="store_true",
                   help="faces and embeddings in one pass per shard (crops never written)")
    _common(p)
    p = sub.add_parser("train", help="CLIP-AU models, predictions and baselines from the cache")
    _common(p)
    p = sub.add_parser("adapt", help="test-time adaptation of every target subject (CLIP-AUTT, "
                       "baselines) from the cache")
    p.add_argument("--methods", help="comma-separated subset of adapt.methods, e.g. clip-autt,tpt")
    p.add_argument("--subjects", help="comma-separated target subjects (default: every target)")
    p.add_argument("--model", help="adapt with this checkpoint folder (e.g. an imported reference "
                   "checkpoint) instead of the workspace's trained models")
    _common(p)
    p = sub.add_parser("predict", help="apply a CLIP-AU checkpoint, or adapted contexts, to OUT's samples")
    p.add_argument("--model", help="checkpoint folder (model.safetensors + model.json)")
    p.add_argument("--contexts", help="a workspace whose committed CLIP-AUTT contexts apply to new "
                   "samples of the same subjects in OUT")
    _common(p)
    p = sub.add_parser("import-reference",
                       help="convert a reference-code checkpoint into this project's format")
    p.add_argument("ckpt", help="torch.save'd dict of the reference head's state dicts")
    p.add_argument("--classes", required=True, help="ordered class list, positive last: neutral,pain")
    _common(p)
    p = sub.add_parser("report", help="results tables and the HTML report from the predictions")
    _common(p)
    p = sub.add_parser("run", help="every stage in order (ingest, faces+embed, train, adapt, report)")
    p.add_argument("--manifest")
    p.add_argument("--split")
    p.add_argument("--classes")
    p.add_argument("--dataset", choices=["manifest", "biovid", "stressid", "bah", "pattern"])
    p.add_argument("--root")
    p.add_argument("--pattern")
    _common(p)
    p = sub.add_parser("demo", help="generate the demo dataset and run every stage on it")
    _common(p)
    p = sub.add_parser("status", help="per stage: shards and samples done, missing, failed")
    p.add_argument("--out", required=True)
    p = sub.add_parser("unlock", help="remove the workspace lock a killed command left behind")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true",
                   help="even when its command still runs on this host")
    p = sub.add_parser("bench", help="benchmarks: faces | embed | memory | plan | train | adapt")
    p.add_argument("which", choices=["faces", "embed", "memory", "plan", "train", "adapt"])
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def build_config(args: argparse.Namespace, base: list[str] | None = None) -> Config:
    overrides = list(base or [])
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={_quote(value, listy=flag == 'classes')}")
    for flag, key in SWITCHES.items():
        if getattr(args, flag, False):
            overrides.append(f"{key}={'false' if flag == 'quiet' else 'true'}")
    overrides.extend(getattr(args, "overrides", []) or [])
    return load_config(getattr(args, "config", None), overrides)


def _quote(value, listy: bool = False) -> str:
    """Render a flag value as YAML (overrides are parsed as YAML)."""
    if listy:
        return "[" + ", ".join(_yaml_str(v.strip()) for v in str(value).split(",")) + "]"
    return _yaml_str(value) if isinstance(value, str) else str(value)


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser()
    if argv[:1] == ["bench"]:
        args = ap.parse_args(argv)
    else:  # key=value overrides may stand anywhere among the flags
        args, extra = ap.parse_known_args(argv)
        bad = [a for a in extra if a.startswith("-") or "=" not in a]
        if bad:
            ap.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(getattr(args, "overrides", None) or []) + extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "bench":
        import importlib

        return importlib.import_module(f"jobs.bench_{args.which}").main(args.rest)
    if args.command == "status":
        from jobs import status

        return status.main(args.out)
    if args.command == "unlock":
        return _unlock(args.out, args.force)
    from jobs import pipeline_job

    try:
        cfg = build_config(args, pipeline_job.defaults(args.command))
        if args.command == "import-reference":
            from jobs import predict

            try:
                print(predict.import_reference(cfg, args.ckpt, cfg.run.out))
            except predict.PredictError as exc:
                raise pipeline_job.UserError(str(exc)) from exc
            return 0
        return pipeline_job.main(args.command, cfg, fused=getattr(args, "fused", False),
                                 model=getattr(args, "model", None), adapt_args=_adapt_args(args, cfg))
    except (ConfigError, pipeline_job.UserError) as exc:
        print(f"autt {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _adapt_args(args: argparse.Namespace, cfg: Config) -> dict | None:
    """--methods / --subjects of `autt adapt`, checked against the method vocabulary;
    --model / --contexts of `autt predict` (exactly one)."""
    if args.command == "predict":
        if bool(args.model) == bool(args.contexts):
            raise ConfigError("autt predict needs exactly one of --model DIR and --contexts WORKSPACE")
        return {"contexts": args.contexts}
    if args.command != "adapt":
        return None
    from pipeline.adapt.config import ADAPT_METHODS

    methods = tuple(m.strip() for m in (args.methods or "").split(",") if m.strip()) or None
    bad = [m for m in methods or () if m not in ADAPT_METHODS]
    if bad:
        raise ConfigError(f"--methods {bad}: unknown; known: {list(ADAPT_METHODS)}")
    subjects = tuple(x.strip() for x in (args.subjects or "").split(",") if x.strip()) or None
    return {"methods": methods, "subjects": subjects, "model": args.model}


def _unlock(out: str, force: bool) -> int:
    from pipeline import lock
    from pipeline.workspace import Workspace

    root = Workspace(out).root
    try:
        info = lock.clear(root, force=force)
    except lock.WorkspaceLocked as exc:
        print(f"autt unlock: error: {exc}", file=sys.stderr)
        return 2
    print(f"{root}: not locked" if info is None else
          f"{root}: removed the lock of {lock.describe(info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
