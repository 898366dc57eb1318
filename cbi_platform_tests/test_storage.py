"""Several processes on one store: a writer and a reader together, no "database is locked"."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import pytest

from cbi_platform.storage import StoreBusyError, write_lock

WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from cbi_platform.serving.store import ForecastStore
    store = ForecastStore(sys.argv[1])
    for i in range(int(sys.argv[2])):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=i)
        store.append([{"as_of": day, "horizon": "1w", "model_version": "cbi-zl-1w/v1",
                       "price": 40.0, "forecast": 40.0 + i}])
    print("writer done", flush=True)
    """
)
READER = textwrap.dedent(
    """
    import sys, time
    from cbi_platform.serving.store import ForecastStore
    store = ForecastStore(sys.argv[1])
    print("ready", flush=True)
    counts, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        counts.append(store.history().height)
        if counts[-1] >= int(sys.argv[2]):
            break
    assert counts == sorted(counts), "a reader saw the history shrink"
    print("reader done", len(counts), counts[-1], flush=True)
    """
)


@pytest.mark.slow
def test_a_reader_and_two_writers_in_other_processes_never_hit_a_lock(tmp_path):
    database = tmp_path / "forecasts.duckdb"
    n = 40
    # A reader (e.g. the API), reading before the writers start and until they are done ...
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(database), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "ready"
    # ... and two writers at once (e.g. a daemon-launched run and `cbi`).
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(database), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in (*writers, reader)]
    for process, (_out, err) in zip((*writers, reader), outputs, strict=True):
        assert process.returncode == 0, err
        assert "lock" not in err.lower(), err
    assert all("writer done" in out for out, _ in outputs[:2])
    reads = outputs[2][0].split()
    assert reads[:2] == ["reader", "done"] and int(reads[2]) > 1 and int(reads[3]) == n
    from cbi_platform.serving.store import ForecastStore

    history = ForecastStore(database).history()
    # Same keys from both writers: the second insert of a key is a no-op, never a duplicate.
    assert history.height == n and history["as_of"].n_unique() == n
    assert history["as_of"].max() == dt.date(2024, 1, 1) + dt.timedelta(days=n - 1)


def test_a_writer_waits_for_the_lock_then_says_who_holds_it(tmp_path):
    database = tmp_path / "x.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from cbi_platform.storage import write_lock\n"
            f"with write_lock({str(database)!r}):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match="held the write lock"):
            with write_lock(database, timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with write_lock(database, timeout=5):  # released by the OS when the holder died
        pass
