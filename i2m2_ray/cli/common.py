"""The options every experiment script shares, and the config they resolve to."""

from __future__ import annotations

import argparse
from pathlib import Path

from i2m2_ray.config import ExperimentConfig, load_config
from i2m2_ray.data import dataset_module

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
DEFAULT_COLUMNS = ["accuracy", "balanced_accuracy"]


def build_parser(experiment: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiments/{experiment}.py", description=f"I2M2 pipeline on {experiment}")
    p.add_argument("--data-dir", help="folder of real data; omitted: a generated sample is written and used")
    p.add_argument("--annotations", help="labels folder (fastMRI+: the Annotations folder)")
    p.add_argument(
        "--config",
        help=f"YAML config (default: configs/{experiment}.yaml with --data-dir, else configs/{experiment}_demo.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--output-dir", help=f"results folder (default: outputs/{experiment})")
    p.add_argument("--num-workers", type=int, help="Ray Train workers per model")
    p.add_argument("--use-gpu", action="store_true", default=None, help="train on GPUs")
    p.add_argument("--seed", type=int, help="seed for split, initialisation and shuffling")
    p.add_argument(
        "--storage-path", help="Ray Train storage (local path, NFS, s3://, gs://); default <output-dir>/ray_results"
    )
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--smoke-test", action="store_true", help="tiny data and model, 1-2 epochs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the same --output-dir: finished models are reused",
    )
    module = dataset_module(experiment)
    if hasattr(module, "add_arguments"):  # dataset-specific flags (e.g. MIMIC's --task)
        module.add_arguments(p)
    return p


def resolve_config(experiment: str, args: argparse.Namespace) -> ExperimentConfig:
    path = args.config or CONFIG_DIR / (f"{experiment}.yaml" if args.data_dir else f"{experiment}_demo.yaml")
    module = dataset_module(experiment)
    overrides = list(module.SMOKE_OVERRIDES) if args.smoke_test else []
    if hasattr(module, "argument_overrides"):  # dataset flags -> config keys
        overrides += list(module.argument_overrides(args))
    overrides += list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"run.num_workers={args.num_workers}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.use_gpu:
        overrides.append("run.use_gpu=true")
    return load_config(path, overrides)
