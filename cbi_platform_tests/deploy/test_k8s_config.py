"""The Kubernetes deployment (deploy/k8s/), validated without helm or a cluster: each section of
the production instance config against the config schema of the class it configures, the
executor run config against `k8s_job_executor`'s, the GPU tags through dagster-k8s's own pod
builder, and values.yaml against the chart's keys (rendered the way the chart renders it)."""

from __future__ import annotations

import copy
import importlib
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_gcp.gcs import GCSComputeLogManager
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig
from dagster_k8s.models import k8s_snake_case_dict
from dagster_postgres import DagsterPostgresStorage
from kubernetes import client as k8s

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
ENV = {
    "DAGSTER_PG_HOST": "10.0.0.5",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "CBI_DAGSTER_LOGS_BUCKET": "cbi-dagster-logs",
}

# Keys of the dagster/dagster chart's values (its values.schema.json, chart 1.13): ours must be
# among them, since the chart ignores or rejects anything else.
CHART_TOP_LEVEL = {
    "global",
    "serviceAccount",
    "dagsterWebserver",
    "dagster-user-deployments",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "imagePullSecrets",
    "computeLogManager",
    "scheduler",
    "runLauncher",
    "pythonLogs",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "retention",
    "concurrency",
    "additionalInstanceConfig",
}
CHART_KEYS = {
    ("global",): {"postgresqlSecretName", "dagsterHome", "serviceAccountName"},
    ("serviceAccount",): {"create", "name", "annotations"},
    ("postgresql",): {
        "enabled",
        "image",
        "postgresqlScheme",
        "postgresqlHost",
        "postgresqlUsername",
        "postgresqlPassword",
        "postgresqlDatabase",
        "postgresqlParams",
        "service",
    },
    ("runLauncher", "config", "k8sRunLauncher"): {
        "image",
        "imagePullPolicy",
        "jobNamespace",
        "loadInclusterConfig",
        "kubeconfigFile",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
        "labels",
        "failPodOnRunFailure",
        "resources",
        "schedulerName",
        "securityContext",
        "runK8sConfig",
    },
    ("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"): {
        "containerConfig",
        "podSpecConfig",
        "podTemplateSpecMetadata",
        "jobSpecConfig",
        "jobMetadata",
    },
    ("dagsterDaemon", "runCoordinator"): {"enabled", "type", "config"},
    ("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"): {
        "maxConcurrentRuns",
        "tagConcurrencyLimits",
        "dequeueIntervalSeconds",
        "dequeueUseThreads",
        "dequeueNumWorkers",
        "blockOpConcurrencyLimitedRuns",
    },
    ("dagsterDaemon", "runMonitoring"): {
        "enabled",
        "startTimeoutSeconds",
        "cancelTimeoutSeconds",
        "maxResumeRunAttempts",
        "pollIntervalSeconds",
        "freeSlotsAfterRunEndSeconds",
    },
    ("concurrency",): {"enabled", "pools", "runs"},
    ("concurrency", "pools"): {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    ("concurrency", "runs"): {"maxConcurrentRuns", "tagConcurrencyLimits"},
}
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "port",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture
def instance() -> dict[str, Any]:
    return _yaml("dagster-instance.yaml")


@pytest.fixture
def values() -> dict[str, Any]:
    return _yaml("values.yaml")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def _errors(schema: Any, value: Any) -> list[str]:
    """Dagster's own validation (and env resolution) of `value` against a config schema."""
    result = process_config(schema, value)
    return [] if result.success else [e.message for e in result.errors]


# The Kubernetes models dagster-k8s builds from each part of a `*_k8s_config` (it accepts
# snake_case or camelCase keys, and only the model's own).
K8S_MODELS = {
    "container_config": k8s.V1Container,
    "pod_spec_config": k8s.V1PodSpec,
    "pod_template_spec_metadata": k8s.V1ObjectMeta,
    "job_spec_config": k8s.V1JobSpec,
    "job_metadata": k8s.V1ObjectMeta,
}


def _k8s_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A launcher's or executor's k8s settings as dagster-k8s reads them into Kubernetes models
    (snake_case), with the errors it would raise at launch (a permissive config schema lets an
    unknown pod field through; the model does not)."""
    normalized: dict[str, Any] = {}
    errors: list[str] = []
    parts = [(k, K8S_MODELS.get(k), v) for k, v in (config.get("run_k8s_config") or {}).items()]
    parts += [("volumes", k8s.V1Volume, v) for v in config.get("volumes", [])]
    parts += [("volume_mounts", k8s.V1VolumeMount, v) for v in config.get("volume_mounts", [])]
    for key, model, value in parts:
        if model is None:
            errors.append(f"run_k8s_config: no Kubernetes model for {key!r}")
            continue
        try:
            snake = k8s_snake_case_dict(model, value)
        except Exception as exc:  # dagster-k8s raises a bare Exception naming the bad keys
            errors.append(f"{key}: {exc}")
            continue
        if key in ("volumes", "volume_mounts"):
            normalized.setdefault(key, []).append(snake)
        else:
            normalized[key] = snake
    return normalized, errors


def _configured_class(section: dict[str, Any]) -> type:
    return getattr(importlib.import_module(section["module"]), section["class"])


def _section_errors(instance: dict[str, Any]) -> dict[str, list[str]]:
    """Each configurable section against the schema of the class it names."""
    launcher = _configured_class(instance["run_launcher"])
    coordinator = _configured_class(instance["run_coordinator"])
    logs = _configured_class(instance["compute_logs"])
    assert (launcher, coordinator, logs) == (
        K8sRunLauncher,
        QueuedRunCoordinator,
        GCSComputeLogManager,
    )
    return {
        "storage": _errors(DagsterPostgresStorage.config_type(), instance["storage"]["postgres"]),
        "run_launcher": _errors(launcher.config_type(), instance["run_launcher"]["config"]),
        "run_coordinator": _errors(
            coordinator.config_type(), instance["run_coordinator"]["config"]
        ),
        "compute_logs": _errors(logs.config_type(), instance["compute_logs"]["config"]),
        "k8s_models": _k8s_config(instance["run_launcher"]["config"])[1],
    }


def _instance_errors(instance: dict[str, Any], folder: Path) -> list[str]:
    """The whole file as `DagsterInstance` loads a dagster.yaml (instance schema, storage and
    concurrency rules)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(instance))
    try:
        dagster_instance_config(str(folder), "dagster.yaml")
    except dg.DagsterInvalidConfigError as exc:
        return [str(exc)]
    return []


def test_the_instance_config_validates_section_by_section(instance, tmp_path):
    assert _instance_errors(instance, tmp_path) == []
    assert _section_errors(instance) == {
        "storage": [],
        "run_launcher": [],
        "run_coordinator": [],
        "compute_logs": [],
        "k8s_models": [],
    }
    processed = process_config(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    assert processed.value["job_namespace"] == "dagster"
    assert processed.value["run_k8s_config"]["pod_spec_config"]["node_selector"] == {
        "cloud.google.com/gke-nodepool": "cbi-cpu"
    }
    storage = process_config(DagsterPostgresStorage.config_type(), instance["storage"]["postgres"])
    assert storage.value["postgres_db"]["hostname"] == ENV["DAGSTER_PG_HOST"]
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] == 1
    assert instance["concurrency"]["pools"]["default_limit"] == 1
    assert instance["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


@pytest.mark.parametrize(
    ("path", "misspelled"),
    [
        (("storage", "postgres", "postgres_db"), "hostnme"),
        (("run_launcher", "config"), "job_namspace"),
        (("run_launcher", "config", "run_k8s_config"), "pod_spec_confg"),
        (("run_launcher", "config", "run_k8s_config", "pod_spec_config"), "node_selectr"),
        (("run_coordinator", "config"), "dequeue_intervl_seconds"),
        (("concurrency", "runs"), "max_concurent_runs"),
        (("compute_logs", "config"), "bucekt"),
        (("run_monitoring",), "free_slot_after_run_end_seconds"),
        (("concurrency", "pools"), "defualt_limit"),
    ],
)
def test_a_misspelled_key_fails_validation(instance, tmp_path, path, misspelled):
    broken = copy.deepcopy(instance)
    section = broken
    for key in path:
        section = section[key]
    correct = next(iter(section))
    section[misspelled] = section.pop(correct)
    errors = _instance_errors(broken, tmp_path) + sum(_section_errors(broken).values(), [])
    assert errors, f"{'.'.join(path)}.{misspelled} was accepted"
    assert any(misspelled in e for e in errors), errors


def test_the_run_limit_belongs_to_concurrency_runs_not_to_the_coordinator(instance, tmp_path):
    """Why the coordinator carries no max_concurrent_runs: with `concurrency` configured,
    dagster 1.13 refuses it there (the helm chart renders it only when it is set)."""
    both = copy.deepcopy(instance)
    both["run_coordinator"]["config"]["max_concurrent_runs"] = 1
    [error] = _instance_errors(both, tmp_path)
    assert "max_concurrent_runs" in error and "concurrency > runs" in error


def test_the_executor_run_config_validates_against_k8s_job_executor():
    run_config = _yaml("k8s-job-executor.yaml")
    config = run_config["execution"]["config"]
    assert _errors(k8s_job_executor.config_schema.config_type, config) == []
    for part in (config["step_k8s_config"], *config["per_step_k8s_config"].values()):
        assert _k8s_config({"run_k8s_config": part})[1] == []
    assert _k8s_config(config)[1] == []
    per_step = config["per_step_k8s_config"]["members_neural"]
    assert per_step["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1

    @dg.op
    def step() -> None: ...

    @dg.job(executor_def=k8s_job_executor)
    def on_kubernetes():
        step()

    assert dg.validate_run_config(on_kubernetes, run_config)
    broken = copy.deepcopy(run_config)
    broken["execution"]["config"]["max_concurent"] = broken["execution"]["config"].pop(
        "max_concurrent"
    )
    assert any(
        "max_concurent" in e
        for e in _errors(k8s_job_executor.config_schema.config_type, broken["execution"]["config"])
    )
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(on_kubernetes, broken)


def test_the_gpu_tags_build_a_pod_on_the_gpu_node_pool(instance):
    tags = _yaml("gpu-run-tags.yaml")
    user_config = UserDefinedDagsterK8sConfig.from_dict(
        yaml.safe_load(yaml.safe_dump(tags["dagster-k8s/config"]))
    )
    launcher = process_config(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    job_config = DagsterK8sJobConfig(
        job_image="cbi-platform:test",
        dagster_home=launcher.value["dagster_home"],
        instance_config_map=launcher.value["instance_config_map"],
    )
    from dagster_k8s.job import construct_dagster_k8s_job

    job = construct_dagster_k8s_job(
        job_config, ["dagster", "api", "execute_run"], "dagster-run-1", user_config
    )
    pod = job.spec.template.spec
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    [toleration] = pod.tolerations
    assert (toleration.key, toleration.effect) == ("nvidia.com/gpu", "NoSchedule")
    [container] = pod.containers
    assert container.resources.limits["nvidia.com/gpu"] in (1, "1")


def _render_instance(values: dict[str, Any], release: str = "cbi") -> dict[str, Any]:
    """The instance sections the chart's templates render from values (helpers/instance/*.tpl),
    enough to validate them with the classes' schemas (module paths: where dagster 1.13 has
    the classes; `dagster.core` is gone)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher.get("runK8sConfig") or {}
    pg = values["postgresql"]
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = daemon["runMonitoring"]
    pools = values["concurrency"]["pools"]
    snake_queued = {
        "maxConcurrentRuns": "max_concurrent_runs",
        "dequeueIntervalSeconds": "dequeue_interval_seconds",
        "dequeueUseThreads": "dequeue_use_threads",
        "dequeueNumWorkers": "dequeue_num_workers",
    }
    snake = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    rendered_launcher = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or "dagster",
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{release}-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_config_maps": [m["name"] for m in launcher.get("envConfigMaps", [])],
        "env_secrets": [s["name"] for s in launcher.get("envSecrets", [])],
        "volume_mounts": launcher.get("volumeMounts", []),
        "volumes": launcher.get("volumes", []),
        "labels": launcher.get("labels", {}),
        "fail_pod_on_run_failure": bool(launcher.get("failPodOnRunFailure")),
        "run_k8s_config": {snake[k]: v for k, v in run_k8s.items()},
    }
    return {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": pg["postgresqlUsername"],
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "hostname": pg["postgresqlHost"],
                    "db_name": pg["postgresqlDatabase"],
                    "port": pg["service"]["port"],
                    "params": pg.get("postgresqlParams", {}),
                }
            }
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": rendered_launcher,
        },
        "run_coordinator": {
            "module": "dagster",
            "class": "QueuedRunCoordinator",
            "config": {
                snake_queued[k]: v for k, v in queued.items() if v is not None and k in snake_queued
            },
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "concurrency": {
            "runs": {"max_concurrent_runs": values["concurrency"]["runs"]["maxConcurrentRuns"]},
            "pools": {"default_limit": pools["defaultLimit"]},
        },
        "compute_logs": {
            "module": "dagster_gcp.gcs.compute_log_manager",
            "class": "GCSComputeLogManager",
            "config": values["computeLogManager"]["config"]["gcsComputeLogManager"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def _chart_key_errors(values: dict[str, Any]) -> list[str]:
    errors = [f"unknown top-level key {k!r}" for k in set(values) - CHART_TOP_LEVEL]
    for path, known in CHART_KEYS.items():
        section = values
        for key in path:
            section = section[key]
        errors += [f"unknown key {'.'.join(path)}.{k}" for k in set(section) - known]
    for deployment in values["dagster-user-deployments"]["deployments"]:
        errors += [
            f"unknown user deployment key {k}" for k in set(deployment) - USER_DEPLOYMENT_KEYS
        ]
    return errors


def test_values_have_the_chart_keys_and_render_the_production_instance(values, instance, tmp_path):
    assert _chart_key_errors(values) == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["concurrency"]["enabled"] and values["dagsterDaemon"]["runMonitoring"]["enabled"]
    assert values["computeLogManager"]["type"] == "GCSComputeLogManager"
    # The user code deployment serves the module the platform's own tooling loads.
    [deployment] = values["dagster-user-deployments"]["deployments"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    module = deployment["dagsterApiGrpcArgs"][
        deployment["dagsterApiGrpcArgs"].index("--module-name") + 1
    ]
    assert module == pyproject["tool"]["dagster"]["module_name"]
    assert deployment["image"]["tag"] != "latest"

    rendered = _render_instance(values)
    rendered["storage"]["postgres"]["postgres_db"]["hostname"] = "10.0.0.5"  # a --set value
    assert _instance_errors(rendered, tmp_path) == []
    assert all(not e for e in _section_errors(rendered).values()), _section_errors(rendered)
    # values.yaml and dagster-instance.yaml describe the same instance.
    for section in ("run_coordinator", "run_monitoring", "concurrency", "telemetry"):
        assert rendered[section] == instance[section], section
    for key in ("env_config_maps", "env_secrets", "labels", "service_account_name"):
        assert rendered["run_launcher"]["config"][key] == instance["run_launcher"]["config"][key]
    # The pods are the same once dagster-k8s has read them (camelCase in values, snake_case in
    # the instance file: both accepted).
    assert _k8s_config(rendered["run_launcher"]["config"]) == _k8s_config(
        instance["run_launcher"]["config"]
    )


def test_a_misspelled_values_key_is_caught(values):
    broken = copy.deepcopy(values)
    runs = broken["concurrency"]["runs"]
    runs["maxConcurentRuns"] = runs.pop("maxConcurrentRuns")
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = []
    errors = _chart_key_errors(broken)
    assert any("maxConcurentRuns" in e for e in errors)
    assert any("envSecret" in e for e in errors)
