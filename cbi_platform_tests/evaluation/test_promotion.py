from cbi_platform.evaluation.promotion import Candidate, decide


def _errors(scale, n=30, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return {f"2020-01-{i:02d}": float(abs(rng.normal(0, scale))) for i in range(1, n + 1)}


def test_first_passing_ensemble_becomes_champion_but_not_a_failing_one():
    good = Candidate("1", mase=1.0, coverage90=0.9, leakage_passed=True, errors=_errors(1))
    assert decide(good, None).promote
    leaky = Candidate("1", mase=0.5, coverage90=0.9, leakage_passed=False)
    assert not decide(leaky, None).promote
    miscalibrated = Candidate("1", mase=0.5, coverage90=0.80, leakage_passed=True)
    assert "coverage" in decide(miscalibrated, None).reasons[0]


def test_challenger_needs_the_margin_and_the_dm_test():
    champion = Candidate("1", mase=1.0, coverage90=0.9, leakage_passed=True, errors=_errors(1.0))
    slightly = Candidate(
        "2", mase=0.97, coverage90=0.9, leakage_passed=True, errors=_errors(0.97, seed=1)
    )
    clearly = Candidate(
        "3",
        mase=0.5,
        coverage90=0.9,
        leakage_passed=True,
        errors={k: v * 0.5 for k, v in champion.errors.items()},
    )
    assert not decide(slightly, champion, margin=0.10).promote  # 3% < 10%
    assert decide(clearly, champion, margin=0.10).promote
    lucky = Candidate(
        "4", mase=0.85, coverage90=0.9, leakage_passed=True, errors=_errors(1.0, seed=9)
    )
    decision = decide(lucky, champion, margin=0.10)
    assert not decision.promote and any("DM" in r for r in decision.reasons)
