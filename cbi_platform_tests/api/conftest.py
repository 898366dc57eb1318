"""Small platform homes for the API tests, written through the platform's own writers
(ForecastStore, RecommendationLog, ConditionLog), never copied from a trained home."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cbi_platform.api import create_app
from cbi_platform.api.keys import create_key
from cbi_platform.conditions import Condition
from cbi_platform.operations.condition_log import ConditionLog
from cbi_platform.procurement.live import RecommendationLog
from cbi_platform.serving.store import ForecastStore
from cbi_platform.settings import HORIZONS
from cbi_platform_tests.conftest import _business_days as business_days  # noqa: F401

START = dt.date(2025, 1, 6)
N_DAYS = 60
ZONE_Z = {"p10": -1.2816, "p30": -0.5244, "p50": 0.0, "p70": 0.5244, "p90": 1.2816}
# The 1m forecast's drivers (feature, value, % of price, label), five so the page picks four.
DRIVERS_1M = [
    ("f_zl_vol63", 0.31, 0.69, "ZL 63-day volatility (31% annualised)"),
    ("f_zl_dist_high252", -0.64, 0.45, "ZL distance from its 52-week high (-64%)"),
    ("f_zl_mom63", -0.15, -0.39, "ZL price vs its 63-day average (-15%)"),
    ("f_zl_wti_ratio", 1.28, -0.28, "ZL / WTI crude price ratio (1.28)"),
    ("f_cot_zl_chg4", -14.8, 0.05, "4-week change in speculators' ZL net position (-14.8 pts)"),
]


def driver_words(label: str, pct: float, horizon: str = "1m") -> str:
    """The platform's sentence for one driver."""
    return f"{label} pushes the {horizon} forecast {'up' if pct > 0 else 'down'} by {abs(pct):.2f}%"


RW_NOTE = (
    "the ensemble is the random walk here: no member beat it on past origins, so no feature "
    "moves this forecast"
)


def forecast_row(
    as_of: dt.date, horizon: str, price: float, *, version: int = 1, role: str = "served"
) -> dict:
    """One forecast-history row the way `live_forecasts` writes it (the fields the API reads)."""
    days = HORIZONS[horizon]
    target = business_days(as_of + dt.timedelta(days=1), days)[-1]
    random_walk = horizon in ("3m", "6m", "12m")
    forecast = price if random_walk else price * (0.97 if horizon == "1m" else 1.005)
    sd = 0.02 * math.sqrt(days / 5)
    zones = {z: forecast * math.exp(sd * q) for z, q in ZONE_Z.items()}
    lo, hi = round(zones["p30"] * 2) / 2, round(zones["p70"] * 2) / 2
    statement = (
        f"41% probability ZL is between {lo:.2f} and {hi:.2f} c/lb on {target} (this band held "
        f"in 60 of 150 past resolved forecasts; nominal 40%; {horizon}, {days} trading days)"
    )
    if horizon == "1m":
        drivers = [driver_words(label, c) for _, _, c, label in DRIVERS_1M]
        detail = [
            {"feature": f, "value": v, "contribution_pct": c, "model": "ensemble", "used": True}
            for f, v, c, _label in DRIVERS_1M
        ]
        note = "exact: ensemble SHAP = member SHAP weighted by the combiner's weights"
    elif random_walk:
        drivers = [
            RW_NOTE,
            f"ZL price vs its 1-year range (z -2.5) pushes the {horizon} forecast up by 6.8% "
            "(not used: ridge, relative MAE 1.01 vs the random walk)",
        ]
        detail = [
            {
                "feature": "f_zl_z252",
                "value": -2.49,
                "contribution_pct": 6.76,
                "model": "ridge",
                "used": False,
            }
        ]
        note = RW_NOTE
    else:
        drivers = [
            f"ZL 63-day volatility (31% annualised) pushes the {horizon} forecast up by 0.3%"
        ]
        detail = [
            {
                "feature": "f_zl_vol63",
                "value": 0.31,
                "contribution_pct": 0.25,
                "model": "ensemble",
                "used": True,
            }
        ]
        note = "exact"
    provisional = horizon == "12m"
    if provisional:
        statement = (
            "PROVISIONAL (no version passed the promotion gates: 90% coverage 0.740 is not "
            "within 5% of 0.90). " + statement
        )
    return {
        "as_of": as_of,
        "horizon": horizon,
        "model_version": f"cbi-zl-{horizon}/v{version}",
        "target_date": target,
        "price": price,
        "forecast": forecast,
        **zones,
        "lo90": forecast * math.exp(-1.645 * sd),
        "hi90": forecast * math.exp(1.645 * sd),
        "band_lo": lo,
        "band_hi": hi,
        "band_probability": 0.41,
        "band_probability_nominal": 0.40,
        "statement": statement,
        "regime": "bull",
        "regime_outlook": "bull 70%, normal 20%, bear 8%, crisis 2%",
        "drivers": drivers,
        "drivers_detail": detail,
        "driver_note": note,
        "volatility": sd * price / 45.0,  # varies with the price: a history to rank against
        "combiner": "random_walk" if random_walk else "inverse_error",
        "shrink_weight": 0.0 if random_walk else 0.8,
        "data_last_date": as_of,
        "data_reference_date": as_of,
        "data_business_days_behind": 0,
        "created_at": dt.datetime.combine(as_of, dt.time(20, 30)),
        "provisional": provisional,
        "failed_gates": ["90% coverage 0.740 is not within 5% of 0.90"] if provisional else [],
        "role": role,
    }


@dataclass
class Home:
    path: Path
    days: list[dt.date]
    prices: list[float]

    @property
    def store(self) -> ForecastStore:
        return ForecastStore(self.path / "forecasts.duckdb")

    @property
    def last_day(self) -> dt.date:
        return self.days[-1]


def build_home(path: Path, n_days: int = N_DAYS, seed: int = 3) -> Home:
    """Served forecasts at every horizon for n_days business days, a shadow row, a
    recommendation, the procurement record files and a stale-data judgement."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    days = business_days(START, n_days)
    prices = [
        round(float(p), 2) for p in 45 * np.exp(np.cumsum(0.012 * rng.standard_normal(n_days)))
    ]
    rows = [forecast_row(d, h, p) for d, p in zip(days, prices, strict=True) for h in HORIZONS]
    shadow = forecast_row(days[-1], "1m", prices[-1], version=2, role="shadow")
    shadow["forecast"] = 999.0  # never served: a test checks it does not leak
    ForecastStore(path / "forecasts.duckdb").append([*rows, shadow])
    record = {
        "policy": "cvar",
        "n_windows": 72,
        "mean_savings_cents": -0.024,
        "ci_low_cents": -0.152,
        "ci_high_cents": 0.107,
        "share_better": 0.5,
        "confidence": 0.9,
    }
    RecommendationLog(path / "operations.duckdb").append(
        {
            "as_of": days[-1],
            "policy": "cvar",
            "window_start": days[-1].replace(day=1),
            "window_end": days[-1],
            "action": "buy",
            "buy_lb": 180000.0,
            "price": prices[-1],
            "remaining_lb": 540000.0,
            "total_lb": 1800000.0,
            "days_left": 3,
            "reason": "Price is inside the lower target zone: buy one railcar.",
            "record": record,
            "text": f"Today ({days[-1]}) the cvar policy says BUY 180,000 lb. Backtested over "
            "72 windows, it cost 0.02 c/lb more than even buying on average.",
            "forecast_versions": {h: f"cbi-zl-{h}/v1" for h in HORIZONS},
        }
    )
    folder = path / "procurement"
    folder.mkdir(exist_ok=True)
    even = {"policy": "even", "n_windows": 72, "mean_savings_cents": 0.0, "p_bootstrap": math.nan}
    (folder / "policy_record.json").write_text(json.dumps([even, record]))  # NaN, as written
    (folder / "backtest.md").write_text("# backtest\n")
    ConditionLog(path / "operations.duckdb").record(
        [
            Condition(
                key="stale_data/target",
                kind="stale_data",
                firing=False,
                title=f"target's last close {days[-1]} is 0 business day(s) behind",
                as_of=days[-1],
                evidence={"behind": 0},
            )
        ],
        run_id="test-run",
    )
    return Home(path, days, prices)


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory) -> Home:
    """A read-only home shared by the tests that do not change it."""
    return build_home(tmp_path_factory.mktemp("api_home"))


@pytest.fixture(scope="session")
def shared_key(shared_home) -> str:
    key, _ = create_key(shared_home.path, "tests")
    return key


BUYER_EMAIL = "buyer@example.com"
BUYER_PASSWORD = "soybean oil buyer 2026"


@pytest.fixture(scope="session")
def shared_user(shared_home):
    """A buyer who signs in to the shared home's page: (email, password)."""
    from cbi_platform.accounts.store import AccountStore
    from cbi_platform.accounts.users import Users

    Users(AccountStore.for_home(shared_home.path, env={})).add(
        BUYER_EMAIL, "Bea Buyer", "buyer", BUYER_PASSWORD
    )
    return BUYER_EMAIL, BUYER_PASSWORD


@contextlib.contextmanager
def cheaper_argon2():
    """Real argon2id at a small cost (1 pass, 8 MiB) while the block runs: the tests that sign
    buyers in hash and verify many passwords on two shared cores. The production parameters
    and their rehash are tested in cbi_platform_tests/accounts/test_users.py."""
    from argon2 import PasswordHasher

    from cbi_platform.accounts import users as users_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
        )
        yield


def sign_in(client, email: str, password: str) -> str:
    """Sign in over HTTP as the page does (POST /session: the client keeps the session cookie);
    the session's CSRF token, which every write sends as X-CSRF-Token."""
    response = client.post("/session", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    assert client.get("/session").json()["user"]["email"] == email
    return response.json()["csrf_token"]


@pytest.fixture(scope="session")
def shared_client(shared_home, shared_key):
    from fastapi.testclient import TestClient

    with TestClient(create_app(shared_home.path, max_business_days_behind=2)) as client:
        client.headers["X-API-Key"] = shared_key
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """Real uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(shared_home, shared_key):
    with ServerThread(create_app(shared_home.path, max_business_days_behind=2)) as server:
        yield server
