"""The options every experiment script shares, the dataset's own flags, plugins, and the
config they resolve to."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.data import PLUGINS_ENV, Flag, dataset_names, get_dataset, load_plugins
from i2m2_ray.placement import GPU_KEY, WORKERS_KEY, explicit_keys
from i2m2_ray.tracking import TRACKING_ENV, RunConfigError, run_config

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
# <experiment>.yaml (the sample) and <experiment>_real.yaml (--data-dir): what --smoke-test merges over the config
SMOKE_DIR = CONFIG_DIR / "smoke"


def build_parser(
    experiment: str, choose_experiment: bool = False, dataset_flags: bool = True
) -> argparse.ArgumentParser:
    """The experiment script's options: the shared ones, then the dataset's flags.

    ``choose_experiment``: the generic script (``experiments/run.py``), which takes the
    dataset from ``--experiment``.
    """
    script = "run.py" if choose_experiment else f"{experiment}.py"
    p = argparse.ArgumentParser(prog=f"experiments/{script}", description=f"I2M2 pipeline on {experiment}")
    if choose_experiment:
        p.add_argument("--experiment", required=True, choices=dataset_names(), help="the dataset")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help=f"import MODULE first: the datasets it registers can be run (repeatable; also ${PLUGINS_ENV})",
    )
    p.add_argument("--data-dir", help="folder of real data; omitted: a generated sample is written and used")
    p.add_argument("--annotations", help="labels folder (fastMRI+: the Annotations folder)")
    p.add_argument(
        "--config",
        help=f"YAML config (default: configs/{experiment}.yaml with --data-dir, else configs/{experiment}_demo.yaml)",
    )
    p.add_argument(
        "--from-run",
        metavar="RUN_ID",
        help="run an MLflow run again: its config.yaml (a model's run: its pipeline's) is the config; "
        "the options given here override it",
    )
    p.add_argument(
        "--tracking-uri",
        help=f"MLflow store for this run's records and the one --from-run reads (default: ${TRACKING_ENV}, "
        "else sqlite:///<output-dir>/mlflow.db)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--output-dir",
        help=f"results folder (default: outputs/{experiment}; under `ray job submit`: "
        f"~/i2m2_ray_outputs/{experiment} on the head node)",
    )
    p.add_argument(
        "--num-workers", type=int, help="Ray Train workers per model (set here: never scaled to the cluster)"
    )
    p.add_argument(
        "--use-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train on GPUs, or not (set here: never changed; else run.use_gpu, dropped on a cluster without GPUs)",
    )
    p.add_argument("--seed", type=int, help="seed for split, initialisation and shuffling")
    p.add_argument(
        "--storage-path", help="Ray Train storage (local path, NFS, s3://, gs://); default <output-dir>/ray_results"
    )
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help=f"tiny data and model, 1-2 epochs: configs/smoke/{experiment}.yaml merged over the config "
        f"(with --data-dir: configs/smoke/{experiment}_real.yaml, the real files at their size, a few samples)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the same --output-dir: finished models are reused",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --output-dir that holds an earlier run, discarding its results, "
        "checkpoints, plots and state (its MLflow runs stay)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray's and MLflow's own log lines (Ray Train's reports, Ray Data's executions, "
        "deprecation warnings); without it a run prints its stages, a line per model per epoch and the results",
    )
    for flag in get_dataset(experiment).flags if dataset_flags else ():
        add_flag(p, flag, experiment)
    return p


def add_flag(parser: argparse.ArgumentParser, flag: Flag, experiment: str) -> None:
    """A dataset's declared :class:`~i2m2_ray.data.Flag` as an argparse option."""
    kwargs: dict[str, Any] = {"help": f"{flag.help} (sets {flag.config_key})".strip()}
    if flag.switch:
        kwargs.update(action="store_true", default=False)
    else:
        kwargs.update(default=None, choices=list(flag.choices) if flag.choices is not None else None)
    try:
        parser.add_argument(flag.name, dest=flag_dest(flag), **kwargs)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"dataset '{experiment}' declares flag {flag.name}, which clashes: {exc}") from None


def flag_dest(flag: Flag) -> str:
    return flag.name.lstrip("-").replace("-", "_")


def flag_overrides(experiment: str, args: argparse.Namespace) -> list[str]:
    """Config overrides for the dataset's flags given on the command line (``--task
    icd9_1`` -> ``data.options.task=icd9_1``, ``train.monitor=auprc``)."""
    out: list[str] = []
    for flag in get_dataset(experiment).flags:
        out += flag.overrides(getattr(args, flag_dest(flag), None))
    return out


def default_config(experiment: str, data_dir: str | None) -> Path:
    """``configs/<experiment>.yaml`` for real data, ``configs/<experiment>_demo.yaml`` for the sample."""
    return CONFIG_DIR / (f"{experiment}.yaml" if data_dir else f"{experiment}_demo.yaml")


def smoke_file(experiment: str, config: str | Path | None = None, real_data: bool = False) -> Path | None:
    """The ``--smoke-test`` settings of ``experiment``: in the ``smoke/`` folder beside the
    chosen config, else in ``configs/smoke/``, the file ``<experiment>.yaml`` (a tiny
    generated sample), or with ``real_data`` (``--data-dir``) ``<experiment>_real.yaml``
    first: the real files at their real sizes, capped to a few samples. None when none
    exists."""
    folders = [Path(config).resolve().parent / "smoke"] if config is not None else []
    names = [f"{experiment}_real.yaml", f"{experiment}.yaml"] if real_data else [f"{experiment}.yaml"]
    for folder in [*folders, SMOKE_DIR]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def smoke_overrides(experiment: str, config: str | Path | None = None, real_data: bool = False) -> list[str]:
    """The smoke settings (:func:`smoke_file`) as ``key=value`` overrides (one per leaf, so
    they merge over the config key by key, as the file's mappings do)."""
    path = smoke_file(experiment, config, real_data)
    if path is None:
        return []
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return _as_overrides(loaded)


def _as_overrides(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            out += _as_overrides(value, f"{prefix}{key}.")
        else:  # a YAML flow value reads back as written (parse_override uses yaml.safe_load)
            text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).removesuffix("...\n").strip()
            out.append(f"{prefix}{key}={text}")
    return out


def resolve_config(experiment: str, args: argparse.Namespace) -> ExperimentConfig:
    """The config file (``--config`` or the default), then the smoke settings, the dataset's
    flags, ``--set`` and the placement options; ``--data-dir`` / ``--annotations`` go to
    ``data.data_dir`` / ``data.annotations``. With ``--from-run`` the run's config (read
    from MLflow, :func:`run_base`) takes the config file's place."""
    base = run_base(experiment, args)
    if base is not None:
        path = None
    else:
        path = Path(args.config) if args.config else default_config(experiment, args.data_dir)
    overrides: list[str] = []
    if args.smoke_test:
        real_data = args.data_dir is not None
        overrides += smoke_overrides(experiment, path, real_data)
        if smoke_file(experiment, path, real_data) is None:
            print(
                f"note: no smoke settings for '{experiment}' (configs/smoke/{experiment}.yaml); "
                f"--smoke-test runs {path} as it is",
                file=sys.stderr,
            )
    overrides += flag_overrides(experiment, args)
    overrides += list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"run.num_workers={args.num_workers}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.use_gpu is not None:
        overrides.append(f"run.use_gpu={'true' if args.use_gpu else 'false'}")
    try:
        cfg = load_config(path, overrides, base=base)
    except ConfigError as exc:
        if base is None:
            raise
        raise ConfigError(f"the config of run {args.from_run}: {exc}") from None
    if args.data_dir is not None:
        cfg.data.data_dir = args.data_dir
    if args.annotations is not None:
        cfg.data.annotations = args.annotations
    return cfg


def run_base(experiment: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The config of the MLflow run ``--from-run`` names (None without it), from the store
    ``--tracking-uri`` or ``$MLFLOW_TRACKING_URI`` names; a :class:`ConfigError` says what
    is missing or does not match."""
    run_id = getattr(args, "from_run", None)
    if not run_id:
        return None
    if args.config:
        raise ConfigError("--config and --from-run both name the config: give one of them")
    uri = getattr(args, "tracking_uri", None) or os.environ.get(TRACKING_ENV)
    if not uri:
        raise ConfigError(
            f"--from-run {run_id}: which MLflow store holds the run? Give --tracking-uri URI or set "
            f"${TRACKING_ENV} (a local run's store is sqlite:///<its output dir>/mlflow.db)"
        )
    try:
        found = run_config(uri, run_id)
    except RunConfigError as exc:
        raise ConfigError(f"--from-run: {exc}") from None
    if found.get("experiment") != experiment:
        raise ConfigError(
            f"--from-run {run_id}: the run is a '{found.get('experiment')}' run, this script runs '{experiment}'"
        )
    return found


def explicit_run_keys(args: argparse.Namespace, overrides: Sequence[str] | None = None) -> set[str]:
    """The ``run.*`` placement keys the command line sets (``--num-workers``,
    ``--use-gpu`` / ``--no-use-gpu``, ``--set run.X=...``): never scaled to the cluster
    (:func:`i2m2_ray.placement.plan`). ``overrides``: the ``--set`` values (default:
    ``args.overrides``)."""
    keys = explicit_keys(list(args.overrides if overrides is None else overrides))
    if args.num_workers is not None:
        keys.add(WORKERS_KEY)
    if args.use_gpu is not None:
        keys.add(GPU_KEY)
    return keys


def preparse(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--experiment`` and ``--plugin`` of a command line, before the full parser (which
    needs the dataset's flags) is built."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--experiment")
    pre.add_argument("--plugin", action="append", default=[])
    known, _ = pre.parse_known_args(list(argv))
    return known.experiment, list(known.plugin)


# where the plugin modules found in the current directory live: Ray ships them to its
# workers (``runtime_env`` ``py_modules``, see i2m2_ray.cli.session)
_PLUGIN_SOURCES: list[str] = []


def plugin_sources() -> list[str]:
    """The packages (folders) and modules (files) of plugins imported from the current
    directory by :func:`import_plugins`."""
    return list(_PLUGIN_SOURCES)


def _import_from_cwd(name: str) -> None:
    """As ``python -m`` would: a plugin whose top-level package the path does not hold is
    looked for in the current directory and imported from there (``sys.path`` unchanged)."""
    import importlib.machinery
    import importlib.util

    top = name.strip().split(".")[0]
    if not top or top in sys.modules or importlib.util.find_spec(top) is not None:
        return
    spec = importlib.machinery.PathFinder.find_spec(top, [os.getcwd()])
    if spec is None or spec.loader is None:
        return  # not here either: load_plugins names the module that cannot be imported
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    spec.loader.exec_module(module)
    locations = spec.submodule_search_locations
    _PLUGIN_SOURCES.append(str(locations[0]) if locations else str(spec.origin))


def import_plugins(modules: Sequence[str]) -> None:
    """Import the ``--plugin`` modules (and, at the first lookup, ``$I2M2_PLUGINS``'s); a
    module beside the command can be named (see :func:`_import_from_cwd`), and the Ray
    started or joined from here ships it to its workers."""
    for name in [*modules, *os.environ.get(PLUGINS_ENV, "").split(",")]:
        _import_from_cwd(name)
    load_plugins(modules)
