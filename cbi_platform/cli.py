"""`cbi`: validate a manifest, run the pipeline, print forecasts — with readable errors."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from cbi_platform import clock
from cbi_platform.market.schema import MarketDataError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from cbi_platform.features import leakage
    from cbi_platform.features.build import build_features
    from cbi_platform.features.contract import feature_columns
    from cbi_platform.market.files import load_files_source
    from cbi_platform.market.manifest import load_manifest
    from cbi_platform.market.validation import ERROR, format_report, validate_market_prices

    manifest_path = Path(args.manifest)
    try:
        manifest = load_manifest(manifest_path)
        bundle = load_files_source(manifest_path)
    except MarketDataError as exc:
        return _fail(str(exc))
    print(f"manifest {manifest_path}: {len(manifest.series)} series, target {manifest.target}")
    for notice in bundle.notices:
        print(f"notice: {notice}")
    reference = manifest.as_of or clock.today()
    findings = validate_market_prices(bundle.prices, manifest.target, reference)
    print(format_report(findings))
    errors = [f for f in findings if f.severity == ERROR and not f.passed]
    if errors:
        print(f"\n{len(errors)} blocking problem(s): the pipeline would refuse this data.")
        return 1
    try:
        built = build_features(bundle.prices, args.horizon, target=manifest.target)
    except MarketDataError as exc:
        return _fail(str(exc))
    frame = built.frame
    print(
        f"features ({args.horizon}): {frame.height} rows x {len(feature_columns(frame))} features"
    )
    gates = leakage.run_leakage_gates(frame, bundle.prices, args.horizon, manifest.target)
    failed = False
    for name, gate in gates.items():
        print(f"[{'ok  ' if gate.passed else 'FAIL'}] leakage {name}: {gate.summary}")
        failed |= not gate.passed
    if failed:
        return 1
    print("\nvalid: no blocking problems (warnings above are informational)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.runner import run_pipeline

    settings = dict(os.environ)
    if args.manifest:
        settings.update(CBI_MANIFEST=str(Path(args.manifest).resolve()), CBI_SOURCE="files")
    if args.protocol:
        settings["CBI_PROTOCOL"] = str(Path(args.protocol).resolve())
    try:
        resources = build_resources(settings)
        return run_pipeline(
            horizons=args.horizons, stream=sys.stdout, resources=resources, force=args.force
        )
    except (MarketDataError, ValueError) as exc:
        return _fail(str(exc))


def cmd_forecast(args: argparse.Namespace) -> int:
    import json as _json

    from cbi_platform.defs.resources import DEFAULT_HOME
    from cbi_platform.serving.store import ForecastStore
    from cbi_platform.settings import horizon_order

    home = Path(os.environ.get("CBI_HOME", str(DEFAULT_HOME)))
    store = ForecastStore(home / "forecasts.duckdb")
    latest = store.latest()
    if latest.height == 0:
        return _fail(
            f"no forecasts in {home / 'forecasts.duckdb'}: run `make run` (or `cbi run`) first"
        )
    rows = sorted(latest.to_dicts(), key=lambda r: horizon_order(r["horizon"]))
    if args.json:
        print(_json.dumps(rows, default=str, indent=1))
        return 0
    first = rows[0]
    print(
        f"ZL forecasts as of {first['as_of']} (data through {first['data_last_date']}, "
        f"{first['data_business_days_behind']} business days behind {first['data_reference_date']})"
    )
    print(
        f"{'horizon':>7} {'target':>10} {'last':>7} {'point':>7} {'P10':>7} {'P30':>7} "
        f"{'P50':>7} {'P70':>7} {'P90':>7}  regime   served version"
    )
    for r in rows:
        zones = " ".join(
            f"{r[k]:7.2f}" if r[k] is not None else "      -"
            for k in ("p10", "p30", "p50", "p70", "p90")
        )
        flag = "  PROVISIONAL" if r.get("provisional") else ""
        print(
            f"{r['horizon']:>7} {str(r['target_date']):>10} {r['price']:7.2f} "
            f"{r['forecast']:7.2f} {zones}  {r['regime'] or '-':8} {r['model_version']}{flag}"
        )
    print("(last: price at the as-of date; point: the ensemble's forecast; P10..P90: its zones)")
    print()
    for r in rows:
        print(f"{r['horizon']}: {r['statement']}")
        if r.get("provisional"):
            print(f"    provisional: failed gate(s): {'; '.join(r.get('failed_gates') or [])}")
        if r.get("p50_note"):
            print(f"    {r['p50_note']}")
        if r.get("volatility") is not None:
            print(f"    volatility {r['volatility']:.1%} ({r.get('vol_model') or 'unknown model'})")
        for d in r["drivers"] or []:
            print(f"    - {d}")
    return 0


def _home() -> Path:
    from cbi_platform.settings import home_path

    return home_path(os.environ)


def _control(args: argparse.Namespace, action: str) -> int:
    from cbi_platform.defs.resources import build_resources
    from cbi_platform.release.control import ServingControlError, promote, rollback

    resources = build_resources(dict(os.environ))
    tracker = resources["mlflow"].tracker()
    audit = resources["operations"].audit()
    actor = args.actor or os.environ.get("USER") or "unknown"
    try:
        if action == "promote":
            result = promote(
                tracker,
                audit,
                args.horizon,
                args.version,
                actor=actor,
                reason=args.reason,
                force=args.force,
            )
        else:
            result = rollback(
                tracker,
                audit,
                args.horizon,
                actor=actor,
                reason=args.reason,
                to_version=args.to_version,
                force=args.force,
            )
    except ServingControlError as exc:
        return _fail(str(exc))
    print(result.message)
    if result.changed:
        print(
            f"audit: {audit.database if hasattr(audit, 'database') else 'ops.audit'} "
            f"({action} {result.from_version} -> {result.to_version} by {actor})"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    return _control(args, "promote")


def cmd_rollback(args: argparse.Namespace) -> int:
    return _control(args, "rollback")


def cmd_replay(args: argparse.Namespace) -> int:
    from cbi_platform.operations.replay import ReplaySettings, format_report, run_replay
    from cbi_platform.replay_driver import DagsterReplayDriver

    env = {k: v for k, v in os.environ.items() if k.startswith(("CBI_", "MLFLOW_"))}
    if args.manifest:
        env.update(CBI_MANIFEST=str(Path(args.manifest).resolve()), CBI_SOURCE="files")
    if args.protocol:
        env["CBI_PROTOCOL"] = str(Path(args.protocol).resolve())
    home = (
        Path(args.home).resolve()
        if args.home
        else _home() / "replays" / (f"{args.start}-{args.days}d")
    )
    if home.exists() and any(home.iterdir()):
        return _fail(f"{home} is not empty: a replay starts from nothing (pass --home DIR)")
    settings = ReplaySettings(
        start=dt.date.fromisoformat(args.start),
        days=args.days,
        home=home,
        env=env,
        horizons=tuple(args.horizons),
        model_kinds=tuple(args.model_kinds) if args.model_kinds else None,
        planted_bias=args.plant_bias,
    )
    server = None
    if not args.no_smtp:
        from cbi_platform.operations.mailbox import LocalMailbox

        server = LocalMailbox()
        settings.smtp = server.start()
    try:
        report = run_replay(settings, sys.stdout, DagsterReplayDriver)
    except (MarketDataError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    finally:
        if server is not None:
            server.stop()
    if server is not None:
        report.mails = len(server.messages)
        server.write(home / "mails")
    text = format_report(report)
    (home / "replay_report.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nreport: {home / 'replay_report.md'}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """Today's procurement recommendation, its reason and its backtested record."""
    import json as _json

    from cbi_platform.defs.resources import DEFAULT_HOME
    from cbi_platform.procurement.live import RecommendationLog

    home = Path(os.environ.get("CBI_HOME", str(DEFAULT_HOME)))
    log = RecommendationLog(home / "operations.duckdb").frame()
    if log.height == 0:
        return _fail(
            f"no recommendation in {home / 'operations.duckdb'}: run `make run` (or the daily "
            "refresh) first"
        )
    latest = log.sort("as_of", "logged_at").tail(1).to_dicts()[0]
    if args.json:
        print(_json.dumps(latest, default=str, indent=1))
        return 0
    print(
        f"Procurement recommendation for {latest['as_of']} — window {latest['window_start']} .. "
        f"{latest['window_end']} ({latest['days_left']} business days left, "
        f"{latest['remaining_lb']:,.0f} of {latest['total_lb']:,.0f} lb to buy)"
    )
    print(f"  {latest['action'].upper()}: {latest['buy_lb']:,.0f} lb at {latest['price']:.2f} c/lb")
    print(f"  {latest['text']}")
    versions = _json.loads(latest.get("forecast_versions") or "{}")
    if versions:
        print("  forecasts from: " + ", ".join(f"{h} {v}" for h, v in versions.items()))
    report = home / "procurement" / "backtest.md"
    if report.exists():
        print(f"  backtest: {report} (plot: {report.with_name('cumulative_savings.png')})")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys: create (printed once), revoke, list. Only SHA-256 hashes are stored."""
    from cbi_platform.api.keys import ApiKeyError, create_key, keys_path, read_keys, revoke_key

    home = Path(args.home).resolve() if args.home else _home()
    try:
        if args.keys_command == "create":
            key, record = create_key(home, args.name)
            print(key)
            print(
                f"created API key {record.name!r} (prefix {record.prefix}) in {keys_path(home)}; "
                "it is shown only now: store it safely",
                file=sys.stderr,
            )
        elif args.keys_command == "revoke":
            record = revoke_key(home, args.name_or_prefix)
            print(
                f"revoked API key {record.name!r} (prefix {record.prefix}) at {record.revoked_at}"
            )
        else:
            keys = read_keys(home)
            if not keys:
                print(f"no API keys in {keys_path(home)}: `cbi keys create --name NAME`")
            for k in keys:
                status = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                print(f"{k.name:24} {k.prefix}...  created {k.created_at}  {status}")
    except ApiKeyError as exc:
        return _fail(str(exc))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Open alerts and the engineer's answers: list, ack, snooze, unsnooze; the day's digest."""
    import json as _json

    from cbi_platform.operations.alerts import AlertAnswerError, AlertBook

    home = Path(args.home).resolve() if args.home else _home()
    book = AlertBook(home / "operations.duckdb")
    if args.alerts_command == "list":
        rows = book.open_alerts_answered().to_dicts()
        if args.json:
            print(_json.dumps(rows, default=str, indent=1))
            return 0
        if not rows:
            print(f"no open alerts in {home / 'operations.duckdb'}")
        for r in rows:
            answer = ""
            if r["status"] != "open":
                until = f" until {r['answer_until']}" if r["status"] == "snoozed" else ""
                answer = f"  [{r['status']}{until} by {r['answered_by']}: {r['answer_reason']}]"
            print(f"{r['key']:32} since {r['opened_as_of']}  {r['title']}{answer}")
        return 0
    if args.alerts_command == "digest":
        from cbi_platform.operations.digest import build_digest, render_digest

        day = dt.date.fromisoformat(args.day) if args.day else clock.today()
        print(render_digest(build_digest(book, day)).get_content(), end="")
        return 0
    by = args.by or os.environ.get("USER") or ""
    try:
        if args.alerts_command == "ack":
            answer = book.acknowledge(args.key, by=by, reason=args.reason)
        elif args.alerts_command == "snooze":
            try:
                until = dt.date.fromisoformat(args.until)
            except ValueError:
                return _fail(f"--until {args.until!r}: not a date (YYYY-MM-DD)")
            answer = book.snooze(args.key, until, by=by, reason=args.reason)
        else:
            answer = book.unsnooze(args.key, by=by, reason=args.reason)
    except AlertAnswerError as exc:
        return _fail(str(exc))
    until = f" until {answer.until}" if answer.until else ""
    print(
        f"{answer.action} {answer.key}{until} by {answer.by} (episode opened "
        f"{answer.opened_as_of}): {answer.reason}"
    )
    return 0


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    """From stdin (--password-stdin: the first line) or an interactive prompt, asked twice;
    never from argv, where other users of the machine could read it."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    """People who sign in to the page: add, remove, list, reset (an engineer's reset)."""
    import secrets

    from cbi_platform.accounts.store import AccountStore, AccountStoreError
    from cbi_platform.accounts.users import AccountError, Users

    home = Path(args.home).resolve() if args.home else _home()
    store = AccountStore.for_home(home)
    users = Users(store)
    try:
        if args.users_command == "add":
            password = _read_password(args, f"password for {args.email}: ")
            user = users.add(args.email, args.name, args.role, password)
            print(f"added {user.role} {user.email} ({user.name}) to {store.describe()}")
        elif args.users_command == "remove":
            user = users.remove(args.email)
            print(f"removed {user.email}: his sessions, programme and alerts are gone")
        elif args.users_command == "reset":
            # A one-time password, printed once: the engineer hands it over, the user changes it.
            password = secrets.token_urlsafe(12)
            user = users.reset(args.email, password)
            print(password)
            print(
                f"reset {user.email}: every session ended, the lock cleared; give this one-time "
                "password to the user (shown only now) and ask for a change after sign-in",
                file=sys.stderr,
            )
        else:
            records = users.list()
            if not records:
                print(f"no users in {store.describe()}: `cbi users add --email ... --name ...`")
            with store.transaction() as tx:
                counts = {
                    int(r["user_id"]): int(r["n"])
                    for r in tx.execute(
                        "SELECT user_id, COUNT(*) AS n FROM sessions GROUP BY user_id"
                    ).all()
                }
            for r in records:
                u = r.user
                lock = f"  locked until {r.locked_until}" if r.locked_until else ""
                print(
                    f"{u.email:32} {u.role:8} {u.name:24} created {r.created_at}  "
                    f"sessions {counts.get(u.id, 0)}{lock}"
                )
    except (AccountError, AccountStoreError, ValueError) as exc:
        return _fail(str(exc))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The forecast API and the buyer's page (uvicorn) over the home's snapshots."""
    import uvicorn

    from cbi_platform.api import create_app

    home = Path(args.home).resolve() if args.home else _home()

    def release_control():
        """The registry and audit log `cbi promote` uses (with its results mirror), for the
        engineers' POST /release/promote and /release/rollback."""
        from cbi_platform.defs.resources import build_resources

        resources = build_resources({**os.environ, "CBI_HOME": str(home)})
        return resources["mlflow"].tracker(), resources["operations"].audit()

    print(f"serving {home} on http://{args.host}:{args.port} (docs: /docs)", flush=True)
    app = create_app(home, release_control=release_control)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent, checksummed copy of the home (stores under their locks, MLflow, Dagster)."""
    from cbi_platform.operations.backup import BackupError, backup, sources_from_env

    home = Path(args.home).resolve() if args.home else _home()
    env = dict(os.environ)
    if args.dagster_home:
        env["DAGSTER_HOME"] = args.dagster_home
    try:
        sources = sources_from_env(home, env)
        manifest = backup(
            sources, Path(args.out), progress=sys.stderr, excludes=args.exclude or ("services",)
        )
    except BackupError as exc:
        return _fail(str(exc))
    rows = ", ".join(f"{k} {v}" for k, v in manifest["key_tables"].items() if v is not None)
    print(f"backup of {home} -> {Path(args.out).resolve()}: {len(manifest['files'])} file(s)")
    print(f"rows: {rows or 'no stores'}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Verify a backup's checksums, then restore it into a (new) home."""
    from cbi_platform.operations.backup import BackupError, restore

    urls = {}
    for item in args.postgres or []:
        name, sep, url = item.partition("=")
        if not sep or name not in ("dagster", "mlflow", "accounts"):
            return _fail(f"--postgres {item!r}: expected dagster=URL, mlflow=URL or accounts=URL")
        urls[name] = url
    try:
        report = restore(
            Path(args.source),
            Path(args.home),
            dagster_home=Path(args.dagster_home) if args.dagster_home else None,
            force=args.force,
            postgres_urls=urls,
        )
    except BackupError as exc:
        return _fail(str(exc))
    for line in report.lines:
        print(line)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    """The platform as long-lived services (cbi_platform/stack): up, down, status."""
    from cbi_platform.stack import control

    return control.main(args.stack_command, args.home, timeout=args.timeout)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    from cbi_platform.features.contract import HORIZONS

    parser = argparse.ArgumentParser(prog="cbi", description="CBI Platform: ZL price forecasting")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a data manifest (exit 1 on bad data)")
    p.add_argument("manifest")
    p.add_argument("--horizon", default="1m", choices=list(HORIZONS))
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="materialize the pipeline with progress output")
    p.add_argument("--manifest", help="use the files source with this manifest")
    p.add_argument("--horizons", nargs="+", default=list(HORIZONS), choices=list(HORIZONS))
    p.add_argument("--protocol", help="protocol YAML (default: cbi_platform/protocol.yaml)")
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute every asset (default: only what is stale or missing, as the UI shows)",
    )
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("forecast", help="print the latest forecast per horizon")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_forecast)
    p = sub.add_parser("recommend", help="today's buy/wait recommendation and its record")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_recommend)
    p = sub.add_parser("promote", help="serve a registered version (writes an audit row)")
    p.add_argument("horizon", choices=list(HORIZONS))
    p.add_argument("version", help="version number, e.g. 3 or v3")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", help="who (default: $USER)")
    p.add_argument(
        "--force",
        action="store_true",
        help="serve a version that failed its promotion gates (it serves provisional; recorded)",
    )
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", help="serve the previous champion (writes an audit row)")
    p.add_argument("horizon", choices=list(HORIZONS))
    p.add_argument("--reason", required=True)
    p.add_argument("--to-version", help="default: the champion before the current one")
    p.add_argument("--actor", help="who (default: $USER)")
    p.add_argument(
        "--force",
        action="store_true",
        help="serve a version that failed its promotion gates (it serves provisional; recorded)",
    )
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("replay", help="replay the daily loop over history (report + plot)")
    p.add_argument("--manifest", help="files source (default: the simulator)")
    p.add_argument("--start", required=True, help="first replayed business day, ISO")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--horizons", nargs="+", default=list(HORIZONS), choices=list(HORIZONS))
    p.add_argument("--protocol", help="protocol YAML for (re)training")
    p.add_argument("--model-kinds", nargs="+", help="restrict the zoo (default: all)")
    p.add_argument(
        "--plant-bias",
        help="HORIZON:[pm]LOGRET:FROM[:TO]: a planted degradation of the champion "
        "(pm: alternating sign)",
    )
    p.add_argument("--home", help="where the replay's stores go (default under CBI_HOME)")
    p.add_argument("--no-smtp", action="store_true", help="log alerts without a mail server")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("keys", help="API keys: create (shown once), revoke, list")
    p.add_argument("--home", help="platform home (default: $CBI_HOME or .cbi_home)")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="print a new key once (only its hash is stored)")
    k.add_argument("--name", required=True, help="who or what the key is for")
    k = keys.add_parser("revoke", help="revoke a key by name or prefix")
    k.add_argument("name_or_prefix")
    keys.add_parser("list", help="names, prefixes, dates and status (never the keys)")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("users", help="people who sign in: add, remove, list, reset")
    p.add_argument("--home", help="platform home (default: $CBI_HOME or .cbi_home)")
    users = p.add_subparsers(dest="users_command", required=True)
    u = users.add_parser("add", help="add a user (password from a prompt or --password-stdin)")
    u.add_argument("--email", required=True)
    u.add_argument("--name", required=True)
    u.add_argument("--role", choices=["buyer", "engineer"], default="buyer")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    u = users.add_parser("remove", help="remove a user and everything he owns")
    u.add_argument("--email", required=True)
    users.add_parser("list", help="emails, roles, names, sessions, locks (never hashes)")
    u = users.add_parser("reset", help="print a one-time password; end the user's sessions")
    u.add_argument("--email", required=True)
    p.set_defaults(func=cmd_users)
    p = sub.add_parser("alerts", help="open alerts: list, ack, snooze, unsnooze; the digest")
    p.add_argument("--home", help="platform home (default: $CBI_HOME or .cbi_home)")
    alerts = p.add_subparsers(dest="alerts_command", required=True)
    a = alerts.add_parser("list", help="the open alerts and their answers")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    for name, text in (
        ("ack", "acknowledge an open alert: no further mail for this episode"),
        ("snooze", "snooze an open alert until a day: no mail for it until then"),
        ("unsnooze", "remove an acknowledgement or snooze: the alert mails again"),
    ):
        a = alerts.add_parser(name, help=text)
        a.add_argument("key", help="the alert key, e.g. accuracy/1w (see `cbi alerts list`)")
        if name == "snooze":
            a.add_argument("--until", required=True, help="last snoozed day, YYYY-MM-DD")
        a.add_argument("--by", help="who answers (default: $USER)")
        a.add_argument("--reason", required=True)
    a = alerts.add_parser("digest", help="print a day's digest (fired, cleared, open)")
    a.add_argument("--day", help="YYYY-MM-DD (default: today)")
    p.set_defaults(func=cmd_alerts)
    p = sub.add_parser("serve", help="the forecast API and the buyer's page (uvicorn)")
    p.add_argument("--home", help="platform home (default: $CBI_HOME or .cbi_home)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("backup", help="a consistent, checksummed copy of the home")
    p.add_argument("--home", help="platform home (default: $CBI_HOME or .cbi_home)")
    p.add_argument("--out", required=True, help="new folder, or a .tar / .tar.gz / .tgz file")
    p.add_argument("--dagster-home", help="Dagster instance folder (default: $DAGSTER_HOME)")
    p.add_argument(
        "--exclude",
        action="append",
        help="skip a home-relative path or glob (repeatable; default: services)",
    )
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="verify a backup, then restore it into a new home")
    p.add_argument("--from", dest="source", required=True, help="backup folder or tarball")
    p.add_argument("--home", required=True, help="the home to restore into (new or empty)")
    p.add_argument("--dagster-home", help="where a separate Dagster instance goes")
    p.add_argument(
        "--postgres",
        action="append",
        metavar="NAME=URL",
        help="restore the dagster / mlflow / accounts PostgreSQL dump into this database "
        "(repeatable)",
    )
    p.add_argument(
        "--force", action="store_true", help="restore into a non-empty home (replaces files)"
    )
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        "stack", help="PostgreSQL, Dagster, the API, MLflow and workers as supervised services"
    )
    p.add_argument(
        "stack_command",
        choices=["up", "down", "status"],
        help="up: start (idempotent); down: stop everything; status: each service's state",
    )
    p.add_argument("--home", help="stack home (default: $DAGSTER_HOME/stack)")
    p.add_argument("--timeout", type=float, default=600.0, help="up: seconds to wait for health")
    p.set_defaults(func=cmd_stack)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    code = args.func(args)
    if args.command in ("run", "replay"):
        print(f"wall time {time.perf_counter() - started:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
