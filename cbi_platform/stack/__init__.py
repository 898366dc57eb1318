"""The stack: the platform as long-lived local services (`cbi stack up|down|status`).

PostgreSQL (a cluster under the stack home, run by the project, not a system service), the
Dagster code server, webserver and daemon on a PostgreSQL instance, the forecast API, the MLflow
tracking server, Redis and Celery workers; each in its own session with a pidfile and a log,
kept alive by a supervisor. Plain modules: no Dagster import (the stack runs Dagster's commands).
"""
