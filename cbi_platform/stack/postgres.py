"""A PostgreSQL cluster under the stack home, run by the project's code (no system service).

PostgreSQL refuses to run as root: when we are root (CI is), initdb, the server and pg_ctl run
as the `postgres` user (`runuser -u postgres --`) and the data and socket folders belong to it.
The server listens on 127.0.0.1 and on a socket folder of its own; TCP logins need a password
(scram-sha-256), socket logins are trusted but the socket folder is 0700 (its owner and root).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from cbi_platform.stack.config import StackPaths

PG_ROOT = Path("/usr/lib/postgresql")
SERVER_USER_WHEN_ROOT = "postgres"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; ".s.PGSQL.<port>" is added to the folder
HBA = (
    "# Written by cbi stack: socket logins trusted (the socket folder is 0700),\n"
    "# TCP on 127.0.0.1 only, with a password.\n"
    "local all all trust\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
)


class PostgresError(RuntimeError):
    """PostgreSQL cannot be found, initialised, reached or started."""


def find_bindir(root: Path = PG_ROOT) -> Path | None:
    """$CBI_PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin, else pg_ctl on PATH."""
    if os.environ.get("CBI_PG_BINDIR"):
        return Path(os.environ["CBI_PG_BINDIR"])
    versions = []
    if root.is_dir():
        for child in root.iterdir():
            if re.fullmatch(r"\d+(\.\d+)?", child.name) and (child / "bin" / "postgres").exists():
                versions.append((tuple(int(p) for p in child.name.split(".")), child / "bin"))
    if versions:
        return max(versions)[1]
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def running_as_root() -> bool:
    return os.geteuid() == 0


def server_user() -> str:
    """Who runs the server, and the cluster's superuser name."""
    return SERVER_USER_WHEN_ROOT if running_as_root() else getpass.getuser()


def as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--", *argv] if running_as_root() else argv


def _give_to_server_user(path: Path) -> None:
    if running_as_root():
        record = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
        os.chown(path, record.pw_uid, record.pw_gid)


def prepare_dirs(paths: StackPaths) -> None:
    """The data and socket folders, 0700 and owned by the server user, reachable by it."""
    socket = paths.pg_socket_dir / ".s.PGSQL.65535"
    if len(str(socket)) > MAX_SOCKET_PATH:
        raise PostgresError(
            f"the socket path {socket} is too long for a unix socket: choose a shorter --home"
        )
    for folder in (paths.pg_data, paths.pg_socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _give_to_server_user(folder)
    if running_as_root():
        probe = subprocess.run(
            as_server_user(["test", "-w", str(paths.pg_data)]), capture_output=True
        )
        if probe.returncode != 0:
            raise PostgresError(
                f"the {SERVER_USER_WHEN_ROOT} user cannot reach {paths.pg_data}: every folder "
                "above it must be searchable by others (chmod o+x), or choose another --home"
            )


def initdb(bindir: Path, paths: StackPaths) -> bool:
    """Initialise the cluster once (False when it already is) and write its pg_hba.conf."""
    if (paths.pg_data / "PG_VERSION").exists():
        return False
    prepare_dirs(paths)
    result = subprocess.run(
        as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(paths.pg_data),
                "-U",
                server_user(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise PostgresError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")
    hba = paths.pg_data / "pg_hba.conf"
    hba.write_text(HBA)
    _give_to_server_user(hba)
    return True


def server_process_user() -> str | None:
    """Who the long-running server is started as (None: ourselves). Not through runuser, so that
    the pidfile holds the postmaster itself: its exit status is the server's, and a signal sent
    to that pid reaches the server, not a wrapper that would leave it running."""
    return SERVER_USER_WHEN_ROOT if running_as_root() else None


def server_command(bindir: Path, paths: StackPaths, port: int) -> list[str]:
    """The server in the foreground (its supervisor is its parent), logging to stderr; start it
    as `server_process_user()`."""
    return [
        str(bindir / "postgres"),
        "-D",
        str(paths.pg_data),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"port={port}",
        "-c",
        f"unix_socket_directories={paths.pg_socket_dir}",
        "-c",
        "logging_collector=off",
        "-c",
        "password_encryption=scram-sha-256",
    ]


def is_ready(bindir: Path, paths: StackPaths, port: int) -> tuple[bool, str]:
    """pg_isready on the socket: (ready, its message)."""
    result = subprocess.run(
        [str(bindir / "pg_isready"), "-h", str(paths.pg_socket_dir), "-p", str(port), "-t", "2"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0, (result.stdout or result.stderr).strip()


def stop(bindir: Path, paths: StackPaths, timeout: int = 30) -> bool:
    """`pg_ctl stop -m fast`: False when no server runs on this data folder."""
    if not (paths.pg_data / "postmaster.pid").exists():
        return False
    result = subprocess.run(
        as_server_user(
            [
                str(bindir / "pg_ctl"),
                "stop",
                "-D",
                str(paths.pg_data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(timeout),
            ]
        ),
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), computed here so the clear
    password never reaches the server, where a failed statement would be logged with it."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def ensure_role_and_databases(
    paths: StackPaths, port: int, role: str, password: str, databases: tuple[str, ...]
) -> list[str]:
    """The login role (its password set to `password` every time) and the databases it owns;
    returns what was created."""
    import psycopg2
    from psycopg2 import sql

    created = []
    connection = psycopg2.connect(
        host=str(paths.pg_socket_dir), port=port, user=server_user(), dbname="postgres"
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cursor.fetchone() else "CREATE"
            cursor.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)),
                (scram_verifier(password),),
            )
            if verb == "CREATE":
                created.append(f"role {role}")
            for database in databases:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(role)
                        )
                    )
                    created.append(f"database {database}")
    finally:
        connection.close()
    return created
