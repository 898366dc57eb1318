"""Where the stack keeps things, which ports and services it runs, and the files it generates.

`stack.yaml` in the stack home holds the choices (ports, services, log rotation); it is written
with the defaults on the first `up` and read on every later one, so an engineer edits it to move a
port. The generated Dagster instance config (`dagster/dagster.yaml`) copies the root dagster.yaml
at generation time, replacing only its storage with PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_DAGSTER_YAML = REPO_ROOT / "dagster.yaml"
CONFIG_FILE = "stack.yaml"
LOCATION_NAME = "cbi_platform"
DB_PASSWORD_ENV = "CBI_STACK_DB_PASSWORD"
DAGSTER_DB = "dagster"
MLFLOW_DB = "mlflow"
ACCOUNTS_DB = "accounts"  # the buyer's users, sessions, programmes, alerts (CBI_ACCOUNTS_DSN)
# Storage keys of a dagster.yaml: the stack replaces them all with one `storage: postgres`.
STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")

DEFAULT_PORTS: dict[str, int] = {
    "postgres": 55432,
    "redis": 56379,
    "mlflow": 55000,
    "code_server": 54266,
    "webserver": 53000,
    "api": 58000,
}
# Start order; `down` stops in the reverse order (PostgreSQL last).
ALL_SERVICES: tuple[str, ...] = (
    "postgres",
    "redis",
    "mlflow",
    "code_server",
    "webserver",
    "daemon",
    "api",
    "celery_default1",
    "celery_default2",
    "celery_gpu1",
)


@dataclass(frozen=True)
class StackPaths:
    """Every file and folder of one stack home."""

    home: Path

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def run_dir(self) -> Path:  # pidfiles and the supervisor's state
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pg_data(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.home / "run" / "pg"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def dagster_yaml(self) -> Path:
        return self.dagster_home / "dagster.yaml"

    @property
    def workspace_yaml(self) -> Path:
        return self.home / "workspace.yaml"

    @property
    def events(self) -> Path:
        return self.home / "events.jsonl"

    @property
    def state(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def secrets_file(self) -> Path:
        return Path(os.environ.get("CBI_STACK_SECRETS", str(self.home / "secrets.env")))

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def celery_dir(self) -> Path:
        return self.home / "celery"

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


@dataclass(frozen=True)
class StackConfig:
    """The stack's choices; `stack.yaml` in the home, defaults for what it leaves out."""

    home: Path
    cbi_home: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    services: tuple[str, ...] = ALL_SERVICES
    # Extra commands the supervisor keeps alive (name -> argv); no health check beyond "alive".
    commands: dict[str, list[str]] = field(default_factory=dict)
    db_user: str = "cbi"
    check_interval_seconds: float = 2.0
    health_interval_seconds: float = 5.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_keep: int = 5

    @property
    def paths(self) -> StackPaths:
        return StackPaths(self.home)

    @property
    def service_names(self) -> tuple[str, ...]:
        return (*self.services, *self.commands)

    def port(self, service: str) -> int | None:
        return self.ports.get(service)

    def to_yaml(self) -> str:
        data = dataclasses.asdict(self)
        data.pop("home")
        data["cbi_home"] = str(self.cbi_home)
        data["services"] = list(self.services)
        return yaml.safe_dump(data, sort_keys=False)


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """`$DAGSTER_HOME/stack` (the Makefile sets DAGSTER_HOME to .cbi_home)."""
    env = os.environ if env is None else env
    dagster_home = env.get("DAGSTER_HOME") or str(REPO_ROOT / ".cbi_home")
    return Path(dagster_home).resolve() / "stack"


def load_config(
    home: Path, env: Mapping[str, str] | None = None, create: bool = False
) -> StackConfig:
    """The home's stack.yaml merged over the defaults; `create` writes it when absent."""
    from cbi_platform.settings import home_path

    env = os.environ if env is None else env
    home = Path(home).resolve()
    path = StackPaths(home).config_file
    raw: dict[str, Any] = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    unknown = set(raw) - {f.name for f in dataclasses.fields(StackConfig)} - {"home"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    ports = {**DEFAULT_PORTS, **{k: int(v) for k, v in (raw.get("ports") or {}).items()}}
    services = tuple(ALL_SERVICES if raw.get("services") is None else raw["services"])
    bad = [s for s in services if s not in ALL_SERVICES]
    if bad:
        raise ValueError(f"{path}: unknown services {bad}; known: {list(ALL_SERVICES)}")
    config = StackConfig(
        home=home,
        cbi_home=Path(raw.get("cbi_home") or home_path(env)).resolve(),
        ports=ports,
        services=tuple(s for s in ALL_SERVICES if s in services),  # always in start order
        commands={k: [str(a) for a in v] for k, v in (raw.get("commands") or {}).items()},
        **{
            k: raw[k]
            for k in (
                "db_user",
                "check_interval_seconds",
                "health_interval_seconds",
                "log_max_bytes",
                "log_keep",
            )
            if k in raw
        },
    )
    if create and not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# The stack's choices (cbi stack up|down|status); edit and `make down up`.\n"
            + config.to_yaml()
        )
    return config


def dagster_yaml_text(config: StackConfig, root_yaml: Path = ROOT_DAGSTER_YAML) -> str:
    """The stack's instance config: the root dagster.yaml's sections (run monitoring, run queue,
    concurrency...) as they are now, with PostgreSQL storage; the password an `env:` reference."""
    root = yaml.safe_load(root_yaml.read_text()) or {}
    sections = {k: v for k, v in root.items() if k not in STORAGE_KEYS}
    sections["storage"] = {
        "postgres": {
            "postgres_db": {
                "username": config.db_user,
                "password": {"env": DB_PASSWORD_ENV},
                "hostname": "127.0.0.1",
                "db_name": DAGSTER_DB,
                "port": config.ports["postgres"],
                # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; psycopg2 is installed.
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    header = (
        f"# Generated by `cbi stack up` from {root_yaml} (storage replaced by PostgreSQL);\n"
        "# rewritten on every up: edit the root dagster.yaml or stack.yaml instead.\n"
    )
    return header + yaml.safe_dump(sections, sort_keys=False)


def workspace_yaml_text(config: StackConfig) -> str:
    """The webserver's and daemon's workspace: the one code server, over gRPC."""
    workspace = {
        "load_from": [
            {
                "grpc_server": {
                    "host": "127.0.0.1",
                    "port": config.ports["code_server"],
                    "location_name": LOCATION_NAME,
                }
            }
        ]
    }
    return yaml.safe_dump(workspace, sort_keys=False)


def write_generated_files(config: StackConfig) -> None:
    paths = config.paths
    for folder in (paths.run_dir, paths.log_dir, paths.dagster_home, paths.mlartifacts):
        folder.mkdir(parents=True, exist_ok=True)
    paths.dagster_yaml.write_text(dagster_yaml_text(config))
    paths.workspace_yaml.write_text(workspace_yaml_text(config))


def mlflow_backend_uri(config: StackConfig) -> str:
    """No password in the URI (it would show in `ps`): libpq reads PGPASSWORD."""
    return (
        f"postgresql+psycopg2://{config.db_user}@127.0.0.1:{config.ports['postgres']}/{MLFLOW_DB}"
    )


def accounts_dsn(config: StackConfig) -> str:
    """The accounts store's database (CBI_ACCOUNTS_DSN). No password in it: libpq reads
    PGPASSWORD, which every service gets from the secrets."""
    return f"postgresql://{config.db_user}@127.0.0.1:{config.ports['postgres']}/{ACCOUNTS_DB}"


def mlflow_tracking_uri(config: StackConfig) -> str:
    """The tracking server when the stack runs one, else its PostgreSQL database directly."""
    if "mlflow" in config.services:
        return f"http://127.0.0.1:{config.ports['mlflow']}"
    return mlflow_backend_uri(config)
