"""What each service is: its command, environment, port, health check and start-up grace."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cbi_platform import workers
from cbi_platform.stack import health, postgres
from cbi_platform.stack.config import (
    DAGSTER_DB,
    REPO_ROOT,
    StackConfig,
    accounts_dsn,
    mlflow_backend_uri,
    mlflow_tracking_uri,
)
from cbi_platform.stack.secrets import DB_PASSWORD, Secrets

HealthCheck = Callable[[], health.Health]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    check: HealthCheck | None = None  # None: alive is healthy
    grace_seconds: float = 120.0  # failed checks during start-up do not count
    wait_healthy: bool = False  # start the next service only once this one is healthy
    user: str | None = None  # run as this user (PostgreSQL when we are root)
    cwd: Path = field(default=REPO_ROOT)


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed in {Path(sys.executable).parent}")
    return found


def stack_env(
    config: StackConfig, secrets: Secrets, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every service gets: DAGSTER_HOME, CBI_HOME, MLFLOW_TRACKING_URI,
    CBI_ACCOUNTS_DSN (the stack's `accounts` database), CBI_CELERY_BROKER (the stack's Redis),
    the secrets, and this checkout first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    others = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    env.update(
        DAGSTER_HOME=str(config.paths.dagster_home),
        CBI_HOME=str(config.cbi_home),
        MLFLOW_TRACKING_URI=mlflow_tracking_uri(config),
        CBI_ACCOUNTS_DSN=accounts_dsn(config),
        # The stack's Redis: the celery executor of every run process and the workers agree
        # (without it a celery job's run submitted to Redis' default port, 6379).
        CBI_CELERY_BROKER=workers.broker_url(config.ports["redis"]),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *others]),
    )
    env.update(secrets)
    if DB_PASSWORD in secrets:  # libpq's: the MLflow and accounts URIs carry no password
        env["PGPASSWORD"] = secrets[DB_PASSWORD]
    return env


def build_specs(
    config: StackConfig, secrets: Secrets, bindir: Path | None, env: Mapping[str, str]
) -> list[ServiceSpec]:
    """The enabled services in start order, then the extra commands."""
    paths = config.paths
    ports = config.ports
    env = dict(env)
    specs: list[ServiceSpec] = []
    for name in config.services:
        port = ports.get(name)
        if name == "postgres":
            if bindir is None:
                raise postgres.PostgresError(
                    "PostgreSQL is not installed (apt-get install -y postgresql)"
                )
            specs.append(
                ServiceSpec(
                    name,
                    postgres.server_command(bindir, paths, port),
                    env,
                    port,
                    check=lambda b=bindir, p=port: health.Health(*postgres.is_ready(b, paths, p)),
                    grace_seconds=30,
                    wait_healthy=True,
                    user=postgres.server_process_user(),
                    cwd=paths.pg_data,
                )
            )
        elif name == "redis":
            services_dir = paths.run_dir / "redis"
            services_dir.mkdir(parents=True, exist_ok=True)
            specs.append(
                ServiceSpec(
                    name,
                    workers.redis_command(services_dir, port),
                    env,
                    port,
                    check=lambda p=port: health.redis_ping(p),
                    grace_seconds=20,
                    wait_healthy=True,
                )
            )
        elif name == "mlflow":
            specs.append(
                ServiceSpec(
                    name,
                    [
                        _bin("mlflow"),
                        "server",
                        "--backend-store-uri",
                        mlflow_backend_uri(config),
                        "--default-artifact-root",
                        str(paths.mlartifacts),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--workers",
                        "1",
                    ],
                    {**env, "PGPASSWORD": secrets.get(DB_PASSWORD, "")},
                    port,
                    check=lambda p=port: health.http_get(f"http://127.0.0.1:{p}/health"),
                    grace_seconds=180,
                )
            )
        elif name == "code_server":
            specs.append(
                ServiceSpec(
                    name,
                    [
                        _bin("dagster"),
                        "api",
                        "grpc",
                        "-m",
                        "cbi_platform.definitions",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--working-directory",
                        str(REPO_ROOT),
                    ],
                    env,
                    port,
                    check=lambda p=port: health.grpc_serving(p),
                    grace_seconds=180,
                    wait_healthy=True,
                )
            )
        elif name == "webserver":
            specs.append(
                ServiceSpec(
                    name,
                    [
                        _bin("dagster-webserver"),
                        "-w",
                        str(paths.workspace_yaml),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                    ],
                    env,
                    port,
                    check=lambda p=port: health.http_get(f"http://127.0.0.1:{p}/server_info"),
                    grace_seconds=180,
                )
            )
        elif name == "daemon":
            specs.append(
                ServiceSpec(
                    name,
                    [_bin("dagster-daemon"), "run", "-w", str(paths.workspace_yaml)],
                    env,
                    None,
                    check=lambda: health.dagster_daemon_heartbeat(
                        ports["postgres"],
                        config.db_user,
                        secrets.get(DB_PASSWORD, ""),
                        DAGSTER_DB,
                    ),
                    grace_seconds=180,
                )
            )
        elif name == "api":
            specs.append(
                ServiceSpec(
                    name,
                    [
                        sys.executable,
                        "-m",
                        "cbi_platform.cli",
                        "serve",
                        "--home",
                        str(config.cbi_home),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    env,
                    port,
                    check=lambda p=port: health.http_get(f"http://127.0.0.1:{p}/health"),
                    grace_seconds=120,
                )
            )
        elif name.startswith("celery_"):
            queue = workers.GPU_QUEUE if "gpu" in name else workers.DEFAULT_QUEUE
            argv, worker_env = workers.worker_command(
                paths.celery_dir, name, queue, workers.broker_url(ports["redis"])
            )
            specs.append(
                ServiceSpec(
                    name,
                    argv,
                    {**env, "PYTHONPATH": worker_env["PYTHONPATH"]},
                    None,
                    grace_seconds=120,
                )
            )
    for name, argv in config.commands.items():
        specs.append(ServiceSpec(name, list(argv), env, None, grace_seconds=5))
    return specs
