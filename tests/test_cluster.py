"""Every YAML in cluster/ parses, has the keys its kind needs, names entry points that exist
and pins the Ray version of pyproject.toml."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
FILES = sorted(CLUSTER.rglob("*.yaml"))


def project_ray_version() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if d.startswith("ray[")]
    match = re.search(r"==([\d.]+)", ray)
    assert match, f"ray is not pinned in pyproject.toml: {ray}"
    return match.group(1)


def scripts_in(command: str) -> list[str]:
    return [tok for tok in shlex.split(command) if tok.endswith(".py")]


def check_launcher(doc: dict[str, Any], version: str) -> None:
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands"):
        assert key in doc, key
    assert doc["head_node_type"] in doc["available_node_types"]
    workers = [n for k, n in doc["available_node_types"].items() if k != doc["head_node_type"]]
    assert workers and all(n.get("max_workers", 0) > n.get("min_workers", 0) for n in workers)  # autoscaling
    # the project (which pins ray) is installed on every node
    assert any("pip install" in c and "i2m2-ray" in c for c in doc["setup_commands"])


def pod_containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(template["spec"]["containers"])


def check_raycluster_spec(spec: dict[str, Any], version: str) -> None:
    assert spec["rayVersion"] == version
    for container in pod_containers(spec["headGroupSpec"]["template"]):
        assert container["image"].startswith(f"rayproject/ray:{version}")
    gpu_groups = 0
    for group in spec["workerGroupSpecs"]:
        for container in pod_containers(group["template"]):
            assert container["image"].startswith(f"rayproject/ray:{version}")
            if "nvidia.com/gpu" in container["resources"]["limits"]:
                gpu_groups += 1
    assert gpu_groups >= 1


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CLUSTER)) for p in FILES])
def test_cluster_yaml(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    version = project_ray_version()
    assert isinstance(doc, dict)
    if path.name == "runtime_env.yaml":
        assert {".venv/", "outputs/", ".git/"} <= set(doc["excludes"])
        assert "env_vars" in doc
    elif doc.get("kind") == "RayCluster":
        check_raycluster_spec(doc["spec"], version)
    elif doc.get("kind") == "RayJob":
        check_raycluster_spec(doc["spec"]["rayClusterSpec"], version)
        scripts = scripts_in(doc["spec"]["entrypoint"])
        assert scripts and all((REPO / s).is_file() for s in scripts), scripts
        runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert "working_dir" in runtime_env and "env_vars" in runtime_env
    else:
        check_launcher(doc, version)
    # any script a file names must exist in the repo
    for script in re.findall(r"experiments/\w+\.py", path.read_text()):
        assert (REPO / script).is_file(), script


def test_every_kind_is_shipped() -> None:
    kinds = {yaml.safe_load(p.read_text()).get("kind", p.name) for p in FILES}
    assert {"RayCluster", "RayJob", "runtime_env.yaml", "aws.yaml", "gcp.yaml"} <= kinds


DOCS = [REPO / "README.md", CLUSTER / "README.md", REPO / "docs" / "errors.md", REPO / "benchmarks" / "README.md"]


def test_ui_commands_in_docs_and_hints_bind_to_localhost() -> None:
    """The MLflow UI and Ray dashboard a user opens stay on 127.0.0.1: every ``mlflow ui``
    command in the docs and in the scripts' closing hints names ``--host 127.0.0.1``, the
    local Ray's dashboard is started on 127.0.0.1, and the cluster dashboard is reached
    through a tunnel (``ray dashboard`` / ``kubectl port-forward``) on 127.0.0.1."""
    texts = {p: p.read_text() for p in DOCS if p.is_file()}
    texts.update({p: p.read_text() for p in (REPO / "i2m2_ray").glob("*.py")})
    ui_lines = [(p, line) for p, t in texts.items() for line in t.splitlines() if "mlflow ui" in line and "--" in line]
    assert ui_lines, "no mlflow ui command found in the docs"
    for path, line in ui_lines:
        assert "--host 127.0.0.1" in line, f"{path}: {line.strip()}"
    cli = (REPO / "i2m2_ray" / "cli.py").read_text()
    assert 'dashboard_host="127.0.0.1"' in cli and "0.0.0.0" not in cli
    walk = texts[CLUSTER / "README.md"]
    assert "ray dashboard cluster/" in walk and "kubectl port-forward" in walk
    assert "RAY_ADDRESS=http://127.0.0.1:8265" in walk
