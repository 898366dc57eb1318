"""How `pytest -n 2` shares the suite between its workers: longest first, files kept together.

xdist's default (`--dist load`) hands each worker contiguous chunks of the collection, so the
few tests that take tens of seconds end wherever the chunks put them and one worker can finish
minutes after the other. Here the work units are test files (a module's fixtures are built
once, on one worker), except the files in SPLIT whose tests are units of their own (no
module-scoped fixture worth keeping together, several slow tests); the collection is ordered
by each unit's expected seconds, longest first, and units go to whichever worker asks next.

The seconds are approximate call times on the 2-core development machine (`--durations`); a
test not listed weighs nothing and keeps its place in the collection order, after the listed
ones. Stale numbers only make the split less even; they never change what runs.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFIX = "cbi_platform_tests/"

# Files whose tests are scheduled one by one.
SPLIT = frozenset(
    {
        "defs/test_neural_assets.py",
        "defs/test_model_assets.py",
        "models/test_zoo.py",
        "models/test_neural.py",
        "models/test_volatility_nn.py",
        "evaluation/test_volatility_eval.py",
        "serving/test_network_export.py",
        "test_distributed.py",
    }
)

# Expected seconds of a test (a key ending in a test name or a parameter prefix) or of a
# whole file (a key ending in .py, for files that are one unit).
SECONDS = {
    "test_daemon.py": 200.0,
    "operations/test_soak_daemon.py": 135.0,
    "operations/test_replay.py::": 45.0,
    "operations/test_backup.py": 20.0,
    "test_warm_run.py": 40.0,
    "defs/test_neural_assets.py::test_two_neural_runs_at_once": 35.0,
    "defs/test_neural_assets.py::test_neural_group_step": 25.0,
    "defs/test_concurrent_runs.py::test_a_retrain_and_a_refresh": 25.0,
    "defs/test_neural_assets.py::test_a_cancelled_or_killed": 15.0,
    "procurement/test_procurement_assets.py": 30.0,
    "defs/test_model_assets.py::test_forecast_pipeline": 30.0,
    "test_distributed.py::test_celery_workers": 30.0,
    "test_celery_lost_task.py": 26.0,  # a worker master killed under a real run
    # One unit in file order: test_later_steps_reuse_the_walk_forward_fits fails when it runs
    # first in a fresh process (on 194760c too) and passes after test_the_key_changes_...:
    # fit_code_version hashes neural._CUSTOM, empty until the first network is built, so the
    # first fit of a process is cached under another key than every later lookup.
    "models/test_fit_cache.py": 32.0,
    "models/test_volatility_nn.py::test_walk_forward_refits": 13.0,
    "models/test_volatility_nn.py::test_it_learns": 9.0,
    "models/test_volatility_nn.py::": 3.0,
    "evaluation/test_volatility_eval.py::test_garch_beats": 8.0,
    "models/test_zoo.py::test_every_listed_spec_fits_and_predicts_at_each_of_its_horizons[nn_": 6.0,
    "models/test_neural.py::test_": 3.0,
    "models/test_neural_tuning.py": 8.0,
    "explain/test_shap_tables.py": 11.0,
    "evaluation/test_shared_fits.py": 11.0,
    "deploy/test_vertex.py": 11.0,
    "serving/test_network_export.py::": 5.5,
    "sentiment/test_finbert.py": 8.0,
    "operations/test_cli_control.py": 8.0,
    "deploy/test_vertex_asset.py": 7.0,
    "features/test_leakage.py": 7.0,
    "deploy/test_serving_container.py": 6.0,
    "test_storage.py": 6.0,
    "test_lifeline.py": 26.0,
    "api/test_programme_page.py": 27.0,  # two Chromium pages and the programme job in process
    "defs/test_programme_job.py": 14.0,
    "api/test_signin_page.py": 15.0,
    "accounts/test_users.py": 8.0,
    "accounts/test_postgres_store.py": 8.0,
    "api/test_security.py": 8.0,
}


def _relative(nodeid: str) -> str:
    return nodeid[len(PREFIX) :] if nodeid.startswith(PREFIX) else nodeid


def unit(nodeid: str) -> str:
    """The work unit of a test: its file, or the test itself in a SPLIT file."""
    file = nodeid.split("::", 1)[0]
    return nodeid if _relative(file) in SPLIT else file


def _test_seconds(nodeid: str) -> float:
    rel = _relative(nodeid)
    keys = [k for k in SECONDS if not k.endswith(".py") and rel.startswith(k)]
    return SECONDS[max(keys, key=len)] if keys else 0.0


def ordered(nodeids: Iterable[str]) -> list[str]:
    """The node ids, units longest first (ties: collection order), each unit contiguous."""
    nodeids = list(nodeids)
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, nodeid in enumerate(nodeids):
        u = unit(nodeid)
        if u not in weight:
            file = _relative(u).split("::", 1)[0]
            weight[u], first[u] = SECONDS.get(file, 0.0), i
        weight[u] += _test_seconds(nodeid)
    position = {nodeid: i for i, nodeid in enumerate(nodeids)}
    return sorted(nodeids, key=lambda n: (-weight[unit(n)], first[unit(n)], position[n]))


def make_scheduler(config, log):
    """xdist's file-scope scheduler with `unit` as the scope, in the collection's order."""
    from xdist.scheduler import LoadScopeScheduling

    class LongestFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    config.option.loadscopereorder = False  # keep `ordered`'s order, not largest unit first
    return LongestFirstScheduling(config, log)
