"""Every YAML in cluster/ parses, has the keys its kind needs, names entry points that exist
and pins the Ray version of pyproject.toml; every head and worker starts with token
authentication, no service or firewall rule opens a Ray port to the internet, and no file
holds a token (tests/test_cluster_auth.py starts such a head for real)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
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
        # Ray Train's controller polls for reports every 0.2 s (an epoch under 2 s would wait)
        assert doc["env_vars"]["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.2"
    elif doc.get("kind") == "RayCluster":
        check_raycluster_spec(doc["spec"], version)
    elif doc.get("kind") == "RayJob":
        check_raycluster_spec(doc["spec"]["rayClusterSpec"], version)
        scripts = scripts_in(doc["spec"]["entrypoint"])
        assert scripts and all((REPO / s).is_file() for s in scripts), scripts
        runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert "working_dir" in runtime_env and "env_vars" in runtime_env
        assert runtime_env["env_vars"]["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.2"
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
    texts.update({p: p.read_text() for p in (REPO / "i2m2_ray").rglob("*.py")})
    ui_lines = [(p, line) for p, t in texts.items() for line in t.splitlines() if "mlflow ui" in line and "--" in line]
    assert ui_lines, "no mlflow ui command found in the docs"
    for path, line in ui_lines:
        assert "--host 127.0.0.1" in line, f"{path}: {line.strip()}"
    cli = (REPO / "i2m2_ray" / "cli" / "session.py").read_text()  # where the local Ray starts
    assert 'dashboard_host="127.0.0.1"' in cli and "0.0.0.0" not in cli
    walk = texts[CLUSTER / "README.md"]
    assert "ray dashboard cluster/" in walk and "kubectl port-forward" in walk
    assert "RAY_ADDRESS=http://127.0.0.1:8265" in walk


# --- security: token authentication on every node, no Ray port open to the internet, no token in a file

LAUNCHERS = [p for p in FILES if p.name in ("aws.yaml", "gcp.yaml")]
KUBERAY = [p for p in FILES if p.parent.name == "kuberay"]
RAY_PORTS = (6379, 8265, 10001)  # GCS, dashboard (jobs API), Ray Client
OPEN_TO_ALL = ("0.0.0.0/0", "::/0")
COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CLUSTER)) for p in paths]


def ray_starts(command: str) -> list[list[str]]:
    """The ``ray start`` invocations in a shell command, each with the words before it
    (environment assignments such as ``RAY_AUTH_MODE=token``)."""
    starts = []
    for part in re.split(r"&&|\|\||;|\|", command):
        words = shlex.split(part)
        for i in range(len(words) - 1):
            if Path(words[i]).name == "ray" and words[i + 1] == "start":
                starts.append(words[: i + 2])
    return starts


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_starts_every_node_with_token_auth(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [s for c in doc[key] for s in ray_starts(c)]
        assert starts, f"{key} starts no Ray"
    for key in COMMAND_LISTS:
        for command in doc.get(key) or []:
            for start in ray_starts(command):
                assert "RAY_AUTH_MODE=token" in start[:-2], f"{key}: {command}"
    # the token reaches every node as ~/.ray/auth_token, copied from a file outside the repo
    mounts = {remote: local for remote, local in doc["file_mounts"].items() if remote.endswith("/.ray/auth_token")}
    assert len(mounts) == 1, doc["file_mounts"]
    (local,) = mounts.values()
    assert local.startswith(("~", "/")) and not Path(local).expanduser().resolve().is_relative_to(REPO), local


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [g["template"]["spec"] for g in groups]


def token_secret(container: dict[str, Any], pod: dict[str, Any]) -> str | None:
    """The Secret a container takes its token from (env RAY_AUTH_TOKEN from a secretKeyRef, or
    RAY_AUTH_TOKEN_PATH into a mounted Secret volume), if token mode is on; else None."""
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
        return None
    if "RAY_AUTH_TOKEN" in env:
        ref = env["RAY_AUTH_TOKEN"].get("valueFrom", {}).get("secretKeyRef")
        return ref["name"] if ref else None
    if "RAY_AUTH_TOKEN_PATH" in env:
        path = env["RAY_AUTH_TOKEN_PATH"]["value"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in secrets and path.startswith(mount["mountPath"].rstrip("/") + "/"):
                return secrets[mount["name"]]
    return None


@pytest.mark.parametrize("path", KUBERAY, ids=ids(KUBERAY))
def test_kuberay_containers_take_the_token_from_a_secret(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    # the operator, the autoscaler and the RayJob submitter get the same Secret through authOptions
    auth = spec.get("authOptions", {})
    assert auth.get("mode") == "token", auth
    for pod in pod_specs(doc):
        for container in pod["containers"]:
            assert token_secret(container, pod) == auth.get("secretName"), container["name"]


def port_ranges_aws(rule: dict[str, Any]) -> list[tuple[int, int]]:
    if str(rule.get("IpProtocol")) == "-1":
        return [(0, 65535)]
    return [(int(rule["FromPort"]), int(rule["ToPort"]))]


def port_ranges_gcp(allowed: dict[str, Any]) -> list[tuple[int, int]]:
    if "ports" not in allowed:
        return [(0, 65535)]  # a protocol without ports: all of them
    ranges = []
    for p in allowed["ports"]:
        lo, _, hi = str(p).partition("-")
        ranges.append((int(lo), int(hi or lo)))
    return ranges


def opens_ray_port(ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges for port in RAY_PORTS)


def test_aws_security_group_admits_ssh_from_a_chosen_cidr_only() -> None:
    doc = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    group = doc["provider"]["security_group"]
    assert group["GroupName"]
    # no node brings a group of its own, whose rules this file would not show
    assert all("SecurityGroupIds" not in n["node_config"] for n in doc["available_node_types"].values())
    for rule in group["IpPermissions"]:
        cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
        if not cidrs:
            continue  # a rule between security groups
        assert port_ranges_aws(rule) == [(22, 22)] and rule["IpProtocol"] == "tcp", rule
        assert not set(cidrs) & set(OPEN_TO_ALL), rule


def test_gcp_nodes_sit_behind_the_listed_firewall() -> None:
    doc = yaml.safe_load((CLUSTER / "gcp.yaml").read_text())
    network = doc["metadata"]["gcp_network"]
    rules = doc["metadata"]["gcp_firewall_rules"]
    tags: set[str] = set()
    for rule in rules:
        assert rule["network"] == network and rule["direction"] == "INGRESS", rule
        tags.update(rule["targetTags"])
        ranges = [r for a in rule["allowed"] for r in port_ranges_gcp(a)]
        if set(rule.get("sourceRanges", [])) & set(OPEN_TO_ALL):
            assert not opens_ray_port(ranges), rule
        if rule.get("sourceRanges"):
            assert ranges == [(22, 22)], rule  # from outside the cluster: SSH only
    for name, node in doc["available_node_types"].items():
        config = node["node_config"]
        assert set(config["tags"]["items"]) & tags, name  # the rules apply to every node
        for nic in config["networkInterfaces"]:  # on the rules' network, not the default one
            assert nic["subnetwork"].split("/")[-1] == network or nic.get("network", "").endswith(network), name


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_no_service_or_rule_exposes_ray_ports(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    for key, value in walk(doc):
        # Kubernetes: no LoadBalancer or NodePort service (the head service stays ClusterIP)
        if key in ("serviceType", "type"):
            assert value not in ("LoadBalancer", "NodePort"), (key, value)
        # AWS rules anywhere in the file
        if key == "IpPermissions":
            for rule in value:
                cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
                cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
                assert not (set(cidrs) & set(OPEN_TO_ALL) and opens_ray_port(port_ranges_aws(rule))), rule
        # GCP firewall rules anywhere in the file
        if key == "sourceRanges" and set(value) & set(OPEN_TO_ALL):
            raise AssertionError(f"a firewall rule admits {value}")
    if doc.get("kind") in ("RayCluster", "RayJob"):
        spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        assert spec["headGroupSpec"].get("serviceType") == "ClusterIP"


def known_tokens() -> set[str]:
    """Tokens this machine holds, to make sure none was pasted into a file here."""
    tokens = {os.environ.get("RAY_AUTH_TOKEN", "").strip()}
    for name in ("auth_token", "i2m2-ray.auth_token"):
        f = Path.home() / ".ray" / name
        if f.is_file():
            tokens.add(f.read_text().strip())
    return {t for t in tokens if len(t) >= 16}


CLUSTER_TEXTS = [*FILES, CLUSTER / "README.md"]


@pytest.mark.parametrize("path", CLUSTER_TEXTS, ids=ids(CLUSTER_TEXTS))
def test_no_token_in_cluster_files(path: Path) -> None:
    text = path.read_text()
    for token in known_tokens():
        assert token not in text
    # nothing shaped like a generated token (``secrets.token_hex(32)``, ``openssl rand``)
    assert not re.search(r"\b[0-9a-fA-F]{32,}\b", text)
    # no literal token handed to Ray or Kubernetes: not on a command line, not as an env value
    assert not re.search(r"RAY_AUTH_TOKEN=(?!\$)\S", text), "a token on a command line"
    assert "--from-literal" not in text
    if path.suffix != ".yaml":
        return
    doc = yaml.safe_load(text)
    for key, value in walk(doc):
        if key in ("env", "env_vars") and isinstance(value, list):
            for e in value:
                if e.get("name") in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
                    assert "value" not in e or e["name"] == "RAY_AUTH_TOKEN_PATH", e
        if key == "env_vars" and isinstance(value, dict):
            assert "RAY_AUTH_TOKEN" not in value
        if key == "kind":
            assert value != "Secret", "the Secret is created from a file (cluster/README.md), not shipped"


def test_cluster_readme_tells_the_client_how_to_present_the_token() -> None:
    text = (CLUSTER / "README.md").read_text()
    for needed in ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "~/.ray/auth_token", "## Security"):
        assert needed in text, needed
    assert "ray dashboard cluster/" in text and "kubectl port-forward" in text
