"""Operations replay benchmark: what running the platform every day would have done.

Usage:
  .venv/bin/python benchmarks/replay.py --start 2022-05-02 --days 60 \
      --plant-bias 1w:0.04:2022-05-16:2022-06-10            # simulator, soy-palm break window
  .venv/bin/python benchmarks/replay.py --manifest manifests/shared_data.yaml \
      --start 2020-02-18 --days 60                          # real ZL across the COVID crash

Starts from a champion trained on data published before --start (full zoo and frozen protocol
unless --model-kinds / --protocol say otherwise), then replays the daily loop in-process through
the production code paths (`cbi_platform.operations.replay`). Alerts go to a real local SMTP
server. Results: benchmarks/results/replay_<name>.{md,json,png} with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_stamp, record_run  # noqa: E402


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest")
    parser.add_argument("--start", required=True)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--horizons", nargs="+", default=["1w", "1m", "3m", "6m", "12m"])
    parser.add_argument("--model-kinds", nargs="+")
    parser.add_argument("--plant-bias")
    parser.add_argument("--name", help="results file name (default: from the source)")
    args = parser.parse_args()

    from cbi_platform.operations.mailbox import LocalMailbox
    from cbi_platform.operations.replay import ReplaySettings, format_report, run_replay
    from cbi_platform.replay_driver import DagsterReplayDriver

    env = {"CBI_SOURCE": "simulated"}
    if args.manifest:
        env = {"CBI_SOURCE": "files", "CBI_MANIFEST": str(Path(args.manifest).resolve())}
    name = args.name or ("shared_data" if args.manifest else "simulated")
    home = Path(tempfile.mkdtemp(prefix=f"cbi_replay_{name}_"))
    settings = ReplaySettings(
        start=dt.date.fromisoformat(args.start),
        days=args.days,
        home=home,
        env=env,
        horizons=tuple(args.horizons),
        model_kinds=tuple(args.model_kinds) if args.model_kinds else None,
        planted_bias=args.plant_bias,
    )
    box = LocalMailbox()
    settings.smtp = box.start()
    started = time.perf_counter()
    try:
        report = run_replay(settings, sys.stdout, DagsterReplayDriver)
    finally:
        box.stop()
    wall = time.perf_counter() - started
    report.mails = len(box.messages)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    plot = out / f"replay_{name}.png"
    if report.plot:
        shutil.copy(report.plot, plot)
    command = "  ".join(["python benchmarks/replay.py", *sys.argv[1:]])
    stamp = machine_stamp()
    subjects = [m["Subject"] for m in box.messages]
    text = "\n".join(
        [
            f"# Operations replay: {name}",
            "",
            f"Command: `{command}`",
            f"Machine: {stamp['machine']} ({stamp['cpus']} CPUs, {stamp['memory_gib']} GiB), "
            f"{stamp['date']}",
            f"Wall time: {wall:.0f} s in all (starting champion, {len(report.days)} days, "
            f"{len(report.retrains)} retrain(s)); replay loop {sum(report.seconds_per_day):.0f} s",
            "",
            format_report(report).replace(str(report.plot), plot.name),
            "",
            "Mails received by the local SMTP server (subjects):",
            *[f"- {s}" for s in subjects],
            "",
            f"![timeline]({plot.name})",
        ]
    )
    (out / f"replay_{name}.md").write_text(text + "\n")
    (out / f"replay_{name}.json").write_text(
        json.dumps(
            {
                "machine": stamp,
                "command": command,
                "wall_seconds": round(wall, 1),
                "days": [str(d) for d in report.days],
                "seconds_per_day": [round(s, 2) for s in report.seconds_per_day],
                "retrains": [{**r, "day": str(r["day"])} for r in report.retrains],
                "alerts": report.alerts.select("as_of", "event", "key", "delivered").to_dicts()
                if report.alerts.height
                else [],
                "mails": report.mails,
                "duplicate_requests": report.duplicate_requests,
                "validation": report.validation.to_dicts() if report.validation.height else [],
            },
            indent=1,
            default=str,
        )
    )
    record_run(out / f"replay_{name}.md")
    print(text)
    print(f"\nwritten: {out / f'replay_{name}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
