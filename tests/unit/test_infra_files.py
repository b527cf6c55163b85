"""The deployment files say what docs/reliability.md asks of a deployment.

No Docker, Kubernetes or Terraform here: the files are parsed (PyYAML, python-hcl2) and
the settings the worker's guarantees rest on are checked where they are configured. The
compose file is also validated by `docker-compose config` in scripts/test.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
TERRAFORM = ROOT / "infra" / "terraform"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
BRIDGE_RULES = ROOT / "infra" / "bridge-rules.json"

QUEUE = "vision"  # docs/contract.md: the Celery queue, a Redis list of that name
# a file in infra/k8s that is an alternative to a listed one, not part of the default set
K8S_ALTERNATIVES = {"bridge-sqs.yaml": "bridge-webhook.yaml"}


# --- helpers ----------------------------------------------------------------------------


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


def _k8s_objects(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _find(kind: str, name: str) -> dict[str, Any]:
    for path in _k8s_files():
        for obj in _k8s_objects(path):
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
    raise AssertionError(f"no {kind} {name} under infra/k8s")


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _seconds(duration: str | int) -> float:
    """A compose duration ("40s", "1m30s", 45) in seconds."""
    if isinstance(duration, int):
        return float(duration)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"unreadable duration {duration!r}"
    return int(parts[1] or 0) * 60 + float(parts[2] or 0)


def _unquote(value: Any) -> Any:
    """python-hcl2 >= 7 keeps the quotes of string literals; older versions strip them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _hcl(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return hcl2.load(fh)


def _hcl_blocks(block_type: str, kind: str) -> dict[str, dict[str, Any]]:
    """Every `data`/`resource` block of `kind` in the module: {name: body}."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        for entry in _hcl(path).get(block_type, []):
            for entry_kind, by_name in entry.items():
                if _unquote(entry_kind) != kind:
                    continue
                for name, body in by_name.items():
                    found[_unquote(name)] = body
    return found


def _statements(policy_name: str) -> list[dict[str, Any]]:
    document = _hcl_blocks("data", "aws_iam_policy_document")[policy_name]
    return [
        {
            "effect": _unquote(s.get("effect", '"Allow"')),
            "actions": {_unquote(a) for a in s["actions"]},
            "resources": [_unquote(r) for r in s.get("resources", [])],
            "has_not": any(k in s for k in ("not_actions", "not_resources")),
        }
        for s in document["statement"]
    ]


def _compose() -> dict[str, Any]:
    with COMPOSE.open() as fh:
        return yaml.safe_load(fh)


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", _k8s_files(), ids=lambda p: p.name)
def test_every_k8s_document_is_a_named_object(path: Path) -> None:
    objects = _k8s_objects(path)
    assert objects, f"{path.name} holds no object"
    for obj in objects:
        assert obj.get("apiVersion"), f"{path.name}: object without apiVersion"
        assert obj.get("kind"), f"{path.name}: object without kind"
        assert obj.get("metadata", {}).get("name"), f"{path.name}: {obj['kind']} without a name"


def test_kustomization_lists_every_manifest_once() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert all((K8S / name).is_file() for name in listed)
    unlisted = {p.name for p in _k8s_files()} - set(listed)
    assert unlisted == set(K8S_ALTERNATIVES), "a manifest is neither listed nor an alternative"
    assert all(K8S_ALTERNATIVES[name] in listed for name in unlisted)


def test_worker_hands_jobs_back_before_kubernetes_kills_it() -> None:
    worker = _find("Deployment", "gvw-worker")
    pod = worker["spec"]["template"]["spec"]
    env = _env(_container(worker, "worker"))
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    soft_shutdown_s = float(env["GVW_SOFT_SHUTDOWN_TIMEOUT_S"])
    # the hand-back and closing the broker connection need time after the soft phase
    assert pod["terminationGracePeriodSeconds"] >= soft_shutdown_s + 10


def test_worker_pod_is_non_root_with_a_read_only_root() -> None:
    worker = _find("Deployment", "gvw-worker")
    pod = worker["spec"]["template"]["spec"]
    container = _container(worker, "worker")
    assert container["args"][0] == "worker"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume
    assert {"requests", "limits"} <= set(container["resources"])


def test_worker_probes_and_metrics_use_the_configured_port() -> None:
    worker = _find("Deployment", "gvw-worker")
    container = _container(worker, "worker")
    config = _find("ConfigMap", "gvw-config")["data"]
    port = int(config["GVW_METRICS_PORT"])
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[container["livenessProbe"]["httpGet"]["port"]] == port
    ping = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "celery -A worker inspect ping" in ping and "celery@$HOSTNAME" in ping
    # KEDA owns the replica count; an apply must not reset it
    assert "replicas" not in worker["spec"]


def test_keda_scales_the_worker_deployment_on_the_vision_list() -> None:
    scaled = _find("ScaledObject", "gvw-worker")
    assert scaled["apiVersion"].startswith("keda.sh/")
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == "gvw-worker"
    assert target.get("kind", "Deployment") == "Deployment"
    _find("Deployment", target["name"])
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == QUEUE
    assert int(meta["listLength"]) > 0
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    assert "cooldownPeriod" in scaled["spec"]
    # the broker's Redis and database, as the workers see it
    broker = _find("ConfigMap", "gvw-config")["data"]["CELERY_BROKER_URL"]
    parsed = re.fullmatch(r"redis://([^/]+)/(\d+)", broker)
    assert parsed, broker
    host_port, db = parsed.groups()
    assert meta["address"] == host_port
    assert meta.get("databaseIndex", "0") == db


def test_redis_keeps_jobs_across_restarts_and_never_evicts() -> None:
    conf_text = _find("ConfigMap", "gvw-redis-config")["data"]["redis.conf"]
    conf = dict(
        line.split(None, 1)
        for line in conf_text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    redis = _find("StatefulSet", "gvw-redis")
    assert redis["spec"]["volumeClaimTemplates"], "Redis needs a persistent volume"
    container = _container(redis, "redis")
    assert container["args"][-1].endswith("redis.conf")


def test_bridge_rules_are_the_same_everywhere() -> None:
    rules = json.loads(BRIDGE_RULES.read_text())
    assert rules["rules"]
    for deployment in ("bridge-webhook.yaml", "bridge-sqs.yaml"):
        [config_map] = [o for o in _k8s_objects(K8S / deployment) if o["kind"] == "ConfigMap"]
        assert json.loads(config_map["data"]["bridge-rules.json"]) == rules, deployment


def test_bridge_accepts_the_mounted_rules() -> None:
    rules_module = pytest.importorskip("worker.bridge.rules")
    [rule] = rules_module.load_rules(str(BRIDGE_RULES))
    assert rule.bucket == "inbox"
    assert rule.template["output"] == "s3://results/vision"


def test_webhook_bridge_is_served() -> None:
    bridge = _find("Deployment", "gvw-bridge-webhook")
    args = _container(bridge, "bridge")["args"]
    assert args[:2] == ["bridge", "webhook"]
    port = int(args[args.index("--port") + 1])
    service = _find("Service", "gvw-bridge")
    assert service["spec"]["selector"].items() <= (
        bridge["spec"]["template"]["metadata"]["labels"].items()
    )
    container_ports = {p["name"]: p["containerPort"] for p in _container(bridge, "bridge")["ports"]}
    assert container_ports[service["spec"]["ports"][0]["targetPort"]] == port
    readiness = _container(bridge, "bridge")["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/healthz"


# --- Terraform ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(TERRAFORM.glob("*.tf")), ids=lambda p: p.name)
def test_every_terraform_file_parses(path: Path) -> None:
    assert _hcl(path), f"{path.name} is empty"


def test_worker_role_reads_inputs_and_writes_results_only() -> None:
    statements = _statements("worker")
    assert all(s["effect"] == "Allow" and not s["has_not"] for s in statements)
    grants = {
        (action, resource)
        for s in statements
        for action in s["actions"]
        for resource in s["resources"]
    }
    input_objects = "${local.input_bucket_arn}/${var.input_prefix}*"
    result_objects = "${local.results_bucket_arn}/${var.results_prefix}*"
    assert grants == {
        ("s3:GetObject", input_objects),
        ("s3:GetObject", result_objects),
        ("s3:PutObject", result_objects),
        # a HEAD of a missing result.json answers 404, not 403, only with ListBucket
        ("s3:ListBucket", "${local.results_bucket_arn}"),
    }


def test_bridge_role_consumes_the_queue_only() -> None:
    [statement] = _statements("bridge")
    assert statement["effect"] == "Allow" and not statement["has_not"]
    assert statement["actions"] == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }
    assert statement["resources"] == ["${aws_sqs_queue.events.arn}"]


def test_roles_are_for_the_service_accounts_only() -> None:
    for trust in ("worker_trust", "bridge_trust"):
        [statement] = _statements(trust)
        assert statement["actions"] == {"sts:AssumeRoleWithWebIdentity"}


def test_uploads_reach_the_queue_with_a_dead_letter_queue() -> None:
    queues = _hcl_blocks("resource", "aws_sqs_queue")
    redrive = queues["events"]["redrive_policy"]
    assert "aws_sqs_queue.dead_letter.arn" in redrive
    assert re.search(r"maxReceiveCount\s*=\s*var\.max_receive_count", redrive)
    [send] = _statements("events_queue")
    assert send["actions"] == {"sqs:SendMessage"}
    document = _hcl_blocks("data", "aws_iam_policy_document")["events_queue"]
    conditions = {_unquote(c["variable"]) for c in document["statement"][0]["condition"]}
    assert "aws:SourceArn" in conditions  # only the input bucket may send
    notification = _hcl_blocks("resource", "aws_s3_bucket_notification")["input"]
    [dynamic] = notification["dynamic"]
    [(block, body)] = dynamic.items()
    assert _unquote(block) == "queue"
    [content] = body["content"]
    assert content["queue_arn"] == "${aws_sqs_queue.events.arn}"
    assert [_unquote(e) for e in content["events"]] == ["s3:ObjectCreated:*"]


def test_outputs_name_the_queue_and_the_roles() -> None:
    outputs = {
        _unquote(name) for entry in _hcl(TERRAFORM / "outputs.tf")["output"] for name in entry
    }
    assert {"queue_url", "worker_role_arn", "bridge_role_arn"} <= outputs


# --- docker compose and the image ---------------------------------------------------------


def test_compose_redis_is_durable_and_never_evicts() -> None:
    command = _compose()["services"]["redis"]["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction"


def test_compose_workers_scale_and_hand_jobs_back() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    # `docker compose up --scale worker=N`: no fixed name, no host port
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"][0] == "worker"
    env = worker["environment"]
    assert env["REMAP_SIGTERM"] == "SIGQUIT"
    assert _seconds(worker["stop_grace_period"]) > float(env["GVW_SOFT_SHUTDOWN_TIMEOUT_S"])
    assert not any("container_name" in s for s in services.values())


def test_compose_gemini_endpoint_is_never_empty() -> None:
    # google-genai refuses an empty base URL ("Base URL must be set"): unset or empty
    # must fall back to the emulator, never reach the worker as ""
    env = _compose()["services"]["worker"]["environment"]
    assert env["GEMINI_BASE_URL"].startswith("${GEMINI_BASE_URL:-http")


def test_compose_wires_minio_uploads_to_the_bridge() -> None:
    services = _compose()["services"]
    bridge = services["bridge"]
    assert bridge["command"][:2] == ["bridge", "webhook"]
    assert any(v.startswith("./infra/bridge-rules.json:") for v in bridge["volumes"])
    script = " ".join(services["buckets"]["command"])
    assert "notify_webhook:gvw endpoint=http://bridge:8080/" in script
    assert "mc event add local/inbox arn:minio:sqs::gvw:webhook --event put" in script
    assert "local/inbox" in script and "local/results" in script


def test_image_is_small_and_runs_as_non_root() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and all("python:3.11-slim" in s for s in stages)
    user = [line for line in lines if line.startswith("USER ")][-1]
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)


def test_compose_pins_every_image_it_pulls() -> None:
    # a tag that moves (none, latest, a bare major) changes the stack under its users
    for name, service in _compose()["services"].items():
        image = str(service["image"])
        if image == "gvw:local":
            continue  # built here
        _, _, tag = image.rpartition(":")
        assert tag and "/" not in tag and tag != "latest", (name, image)
        assert tag.startswith("RELEASE.") or tag.count(".") >= 2, (name, image)


def test_compose_workers_send_task_events_for_flower() -> None:
    from worker.queue.app import celery_config
    from worker.settings import Settings

    config = celery_config(Settings())
    assert config["worker_send_task_events"] is True
    assert config["task_send_sent_event"] is True


def test_the_package_carries_its_license_and_type_hints() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (root / "LICENSE").read_text()
    assert (root / "worker" / "py.typed").exists() and (root / "tasks" / "py.typed").exists()
    assert not any("opencv" in dep for dep in project["dependencies"])


def _build_stage_copies() -> set[str]:
    """What the Dockerfile's build stage (the one that builds the wheel) copies from the
    build context: the sources of its COPY lines (not what one copies from a stage)."""
    copied: set[str] = set()
    stages = 0
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith(("FROM ", "COPY ")):
            continue  # instructions only: a continued RUN line is not shell words
        words = shlex.split(line)
        if words[0] == "FROM":
            stages += 1
        elif stages == 1:
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words[1:] if not w.startswith("--")][:-1]  # not the target
            copied |= {w.rstrip("/").removeprefix("./") for w in sources}
    return copied


def _dockerignore_keeps(name: str) -> bool:
    """Whether infra/Dockerfile.dockerignore lets a top-level file into the build context
    (the last pattern that matches decides; `!` lets it in)."""
    kept = True
    for raw in (ROOT / "infra" / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name, pattern.removeprefix("**/")):
            kept = negated
    return kept


def test_the_image_builds_with_every_file_the_package_declares() -> None:
    # setuptools warns that a build missing a `license-files` file will fail from February
    # 2027; the readme is the package's long description
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = [*project.get("license-files", []), project["readme"]]
    copied = _build_stage_copies()
    assert {"pyproject.toml", "tasks", "worker"} <= copied, copied
    for name in needed:
        assert (ROOT / name).is_file(), name
        assert name in copied, f"infra/Dockerfile's build stage does not copy {name}"
        assert _dockerignore_keeps(name), f"infra/Dockerfile.dockerignore leaves out {name}"
    assert not _dockerignore_keeps(".venv") and not _dockerignore_keeps(".git")
