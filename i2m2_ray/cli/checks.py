"""Checks a command runs before Ray starts, each a plain message instead of a traceback:
the output folder, the data settings, the search space against what its trials will run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from i2m2_ray.config import ConfigError, ExperimentConfig

if TYPE_CHECKING:
    from i2m2_ray.tuning.space import SearchFile


def check_writable_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """``path`` must be a folder this process can write to, or one it can create: checked
    on the folder, or the nearest of its parents that exists, by writing a temporary file
    there (so a read-only mount fails even for root). Nothing is created.

    Returns:
        the resolved path.
    Raises:
        ConfigError: the path is a file, lies under a file, or cannot be written.
    """
    out = Path(path).expanduser().resolve()
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"lies under {existing}, which is a file"
        raise ConfigError(f"{flag} {out} {where}; give a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".i2m2-write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        what = out if existing == out else f"{out} (its nearest existing folder {existing})"
        raise ConfigError(f"{flag} {what} cannot be written ({reason}); give a folder you can write to") from None
    return out


def check_search_space(experiment: str, search: SearchFile, base: ExperimentConfig) -> None:
    """A sweep's space against the config its trials start from (``base``: the search file's
    base config with the smoke settings, its overrides and ``--set``): the base and every
    choice, alone and in the combinations a trial can sample, must make a config that
    loads and that the dataset's ``check_config`` accepts (a crop the sample cannot hold,
    say). Runs before Ray starts.

    Raises:
        ConfigError: naming the parameter(s) and value(s).
    """
    from i2m2_ray.data import check_data_config, get_dataset
    from i2m2_ray.tuning.space import TrialRecipe, check_space

    dataset = get_dataset(experiment)
    check_data_config(dataset, base)
    check_space(TrialRecipe(space=search.space, base=base.to_dict()), lambda cfg: check_data_config(dataset, cfg))
