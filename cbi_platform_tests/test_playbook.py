"""docs/PLAYBOOK.md has an entry per condition kind, and the mails link to its anchor."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from cbi_platform.conditions import KINDS
from cbi_platform.operations.alerts import AlertEvent, playbook_link, render

PLAYBOOK = Path(__file__).resolve().parents[1] / "docs" / "PLAYBOOK.md"


def github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation other than - and _ dropped, spaces
    to hyphens."""
    return re.sub(r"[^a-z0-9_\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_kind_has_a_playbook_entry_whose_anchor_the_mails_use():
    text = PLAYBOOK.read_text()
    assert re.search(r"^## Alerts$", text, re.M)
    anchors = {github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", text, re.M)}
    for kind in KINDS:
        event = AlertEvent(
            key=f"{kind}/x",
            kind=kind,
            event="fired",
            as_of=dt.date(2024, 5, 6),
            horizon=None,
            title="t",
            evidence={},
            link=None,
            opened_as_of=dt.date(2024, 5, 6),
        )
        body = render(event, playbook_url="https://docs.example/PLAYBOOK.md").get_content()
        (link,) = re.findall(r"Playbook: (\S+)", body)
        assert link == f"https://docs.example/PLAYBOOK.md#{github_anchor(kind)}"
        assert link.split("#", 1)[1] in anchors, kind
        entry = text.split(f"### {kind}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means:**", "**Evidence:**", "**First:**", "**Clears:**", "**Retrain:**"):
            assert part in entry, (kind, part)
    assert playbook_link("accuracy") == "docs/PLAYBOOK.md#accuracy"
    entries = {k: text.split(f"### {k}\n", 1)[1].split("\n### ", 1)[0] for k in KINDS}
    retrain = {k for k, entry in entries.items() if "**Retrain:** yes" in entry}
    assert retrain == {"accuracy", "coverage"}
