"""Every number on the numbers pages names its results file, and the number is in that file.

The pages: README.md's "Numbers today" section and docs/evaluation.md from its "Numbers today"
heading on. Each paragraph, list item and table row is an item. An item holding a measured
number must link a file under benchmarks/results/ (in the item itself, or anywhere in the
heading section it sits under), and each measured number must appear in one of those files
(its .md or the .json beside it).

What is NOT a measured number (kept short on purpose; anything else is checked):
- text inside `code spans` and link targets (commands, paths);
- dates and times (2024-06-13, 2024-06, 06-10, 17:03, years 1900-2099, year ranges 2021-24);
- horizons (1w, 12m), and digits glued to a name (nn_lstm2, P10, float32, x86_64, issue-3);
- a number hyphenated into a word (63-day window, 2-layer LSTM, 2-core machine);
- a stated goal or threshold: a number right after <=, >=, <, >, +-, "goal", "target" or
  "threshold", and the nominal 90% / 80% of a zone or band.
A doc number matches a file number when it is that number rounded to the decimals the doc
shows (thousands separators and trailing zeros ignored); a number the doc marks with % also
matches the fraction (0.933 for 93.3%).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS_LINK = re.compile(r"\]\(([^)\s]*benchmarks/results/[^)\s#]+?\.(?:md|json))(?:#[^)]*)?\)")

NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
# a number, or a range / list of numbers sharing what follows them ("5–11%", "94 / 88%")
GROUP = re.compile(
    rf"(?<![\w.])({NUMBER})((?:\s*(?:–|-|/|…)\s*(?:{NUMBER}))*)(?![\w])",
)
EXCLUDED_SPANS = [
    re.compile(r"`[^`]*`"),  # code spans: commands, paths
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"\b\d{4}-\d{2}(?:-\d{2})?\b"),  # dates
    re.compile(r"\b\d{2}-\d{2}\b"),  # month-day
    re.compile(r"\b\d{1,2}:\d{2}\b"),  # times
    re.compile(r"\b(?:19|20)\d{2}(?:\s*[–-]\s*(?:(?:19|20)?\d{2}))?\b"),  # years, year ranges
    re.compile(r"\b\d+(?:w|m)(?:\s*(?:–|…|-)\s*\d+(?:w|m))?\b"),  # horizons, horizon ranges
    re.compile(r"\b\d+-[A-Za-z]+"),  # one word with a number: 63-day, 2-layer, 2-core
    re.compile(r"(?:[A-Za-z_§]|issue[ -])\d[\w.]*"),  # digits glued to a name
    re.compile(r"(?:≤|≥|<|>|±|\bgoal|\btarget|\bthreshold)\s*(?:of\s*)?[\d.,–/ %]*\d%?"),
    re.compile(r"\b(?:90|80)%(?=\s*(?:zones?|bands?|goal|interval|coverage|width))"),
]


@dataclass(frozen=True)
class Item:
    """One paragraph, list item or table row, with the section (heading) it sits under."""

    section: str
    text: str
    line: int


def doc_items(text: str) -> list[Item]:
    """Split markdown into items: paragraphs, list items, table rows (code fences skipped)."""
    items: list[Item] = []
    section, current, start, fenced = "", [], 0, False

    def flush() -> None:
        if current:
            items.append(Item(section, " ".join(current), start))
            current.clear()

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if stripped.startswith("#"):
            flush()
            section = stripped.lstrip("#").strip()
            continue
        if not stripped:
            flush()
            continue
        new_item = stripped.startswith("|") or re.match(r"([*-]|\d+\.)\s", stripped)
        if new_item or (current and current[0].startswith("|")):
            flush()
        if not current:
            start = number
        current.append(stripped)
    flush()
    return items


def section_of(text: str, heading: str, until: str | None = None) -> tuple[str, int]:
    """The text from a `## heading` line up to the next heading of the same level (or `until`),
    and the number of lines before it (so problems name the page's own line numbers)."""
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == heading)
    level = len(heading) - len(heading.lstrip("#"))
    stop = len(lines)
    for i in range(begin + 1, len(lines)):
        line = lines[i].strip()
        hashes = len(line) - len(line.lstrip("#"))
        if (until and line == until) or (not until and line.startswith("#") and hashes <= level):
            stop = i
            break
    return "\n".join(lines[begin:stop]), begin


@dataclass(frozen=True)
class DocNumber:
    text: str
    value: Decimal
    decimals: int
    percent: bool


def measured_numbers(item_text: str) -> list[DocNumber]:
    """The measured numbers of an item, after the exclusions in the module docstring."""
    text = item_text
    for pattern in EXCLUDED_SPANS:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    text = text.replace("**", "  ")
    found = []
    for group in GROUP.finditer(text):
        percent = text[group.end() :].lstrip().startswith("%")
        for token in re.findall(NUMBER, group.group(0)):
            plain = token.replace(",", "")
            decimals = len(plain.split(".")[1]) if "." in plain else 0
            found.append(DocNumber(token, Decimal(plain), decimals, percent))
    return found


def results_numbers(path: Path) -> list[Decimal]:
    """Every number in a results file and in the .json beside it (absolute values)."""
    texts = []
    for candidate in {path, path.with_suffix(".md"), path.with_suffix(".json")}:
        if candidate.exists():
            texts.append(candidate.read_text(encoding="utf-8"))
    numbers: set[Decimal] = set()
    for text in texts:
        for token in re.findall(r"\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
            parts = [token.replace(",", "")] if re.fullmatch(NUMBER, token) else []
            parts += [p for p in token.split(",") if p]
            for part in parts:
                try:
                    value = Decimal(part)
                except ArithmeticError:
                    continue
                # A commit hash such as ...9e2267060663... reads as a huge exponent: not a result.
                if value.is_finite() and abs(value.adjusted()) <= 30:
                    numbers.add(value)
    return sorted(numbers)


def number_in(number: DocNumber, values: list[Decimal]) -> bool:
    """The doc number is a file number rounded to the doc's decimals (or its fraction, for %)."""
    half = Decimal(5) / Decimal(10) ** (number.decimals + 1)
    scales = [Decimal(1), Decimal(100)] if number.percent else [Decimal(1)]
    return any(abs(v * s - number.value) <= half for v in values for s in scales)


def cited_files(item: Item, items: list[Item], doc: Path) -> list[Path]:
    """Results files linked in the item, else anywhere in the section it sits under."""
    own = RESULTS_LINK.findall(item.text)
    links = own or [
        link for other in items if other.section == item.section
        for link in RESULTS_LINK.findall(other.text)
    ]  # fmt: skip
    return [(doc.parent / link).resolve() for link in links]


def problems(doc: Path, text: str, offset: int = 0) -> list[str]:
    """Every measured number without a cited results file, or absent from the files it cites."""
    items = doc_items(text)
    found = []
    for item in items:
        numbers = measured_numbers(item.text)
        if not numbers:
            continue
        files = cited_files(item, items, doc)
        where = f"{doc.name}:{item.line + offset} [{item.section}]"
        if not files:
            shown = ", ".join(n.text for n in numbers)
            found.append(f"{where}: numbers {shown} cite no benchmarks/results/ file")
            continue
        missing = [f for f in files if not f.exists()]
        if missing:
            found.append(f"{where}: cites a missing file {missing[0]}")
            continue
        values = sorted({v for f in files for v in results_numbers(f)})
        for number in numbers:
            if not number_in(number, values):
                names = ", ".join(f.name for f in files)
                found.append(f"{where}: {number.text}{'%' if number.percent else ''} "
                             f"is not in {names}")  # fmt: skip
    return found


PAGES = [
    ("README.md", "## Numbers today", None),
    ("docs/evaluation.md", "## Numbers today", "## See also"),
]


@pytest.mark.parametrize(("page", "heading", "until"), PAGES, ids=[p for p, _, _ in PAGES])
def test_every_number_on_the_numbers_pages_is_in_its_results_file(page, heading, until):
    doc = ROOT / page
    text, offset = section_of(doc.read_text(encoding="utf-8"), heading, until)
    assert measured_numbers(text), "the section holds no numbers: the heading moved?"
    found = problems(doc, text, offset)
    assert not found, "\n".join(found)


# ---- the checker itself, on a tiny synthetic page and results file ----


def _page(tmp_path: Path, body: str) -> tuple[Path, str]:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "speed.md").write_text("- wall time **1518 s**; peak 3019 MiB; coverage 0.9333\n")
    (results / "speed.json").write_text(json.dumps({"median_s": 16.84, "p95_ms": 8.512}))
    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    doc.write_text(body)
    return doc, body


def test_checker_accepts_cited_numbers_rounded_and_formatted(tmp_path):
    doc, text = _page(
        tmp_path,
        "## Speed\n\nThe run takes **1,518 s** (peak 3,019 MiB; [results]"
        "(../benchmarks/results/speed.md)) on 2026-12-01, 1w to 12m.\n\n"
        "| metric | value |\n|---|---|\n| median | 16.8 s, p95 8.5 ms, zones cover 93.3% |\n\n"
        "Its 90% zones (goal 85–95%, target ≤ 30 s) used `benchmarks/speed.py --days 3`.\n",
    )
    assert problems(doc, text) == []


def test_checker_fails_on_a_planted_wrong_number(tmp_path):
    doc, text = _page(
        tmp_path,
        "## Speed\n\nThe run takes **1,581 s** ([results](../benchmarks/results/speed.md)).\n",
    )
    assert problems(doc, text) == ["page.md:3 [Speed]: 1,581 is not in speed.md"]


def test_checker_fails_on_a_number_without_a_results_file(tmp_path):
    doc, text = _page(tmp_path, "## Tests\n\n760 passed in 736 s of pytest.\n")
    assert problems(doc, text) == [
        "page.md:3 [Tests]: numbers 760, 736 cite no benchmarks/results/ file"
    ]


def test_checker_does_not_round_up_precision_the_file_lacks(tmp_path):
    doc, text = _page(
        tmp_path,
        "## Speed\n\nMedian 16.84 s, p95 8.51 ms, cover 93.4% "
        "([r](../benchmarks/results/speed.md)).\n",
    )
    assert problems(doc, text) == ["page.md:3 [Speed]: 93.4% is not in speed.md"]


# ---- every results file records its commit and wall time (benchmarks/_machine.py) ----


def _machine():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_machine", ROOT / "benchmarks" / "_machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_commit_stamp_is_the_hash_on_a_clean_tree_and_dirty_otherwise(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    machine = _machine()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
            cwd=tmp_path, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "r.md").write_text("# r\n")
    git("add", "-A")
    git("commit", "-q", "-m", "c")
    head = git("rev-parse", "HEAD")
    assert machine.git_commit(tmp_path) == head
    (tmp_path / "benchmarks" / "results" / "r.md").write_text("# r, rewritten by a benchmark\n")
    assert machine.git_commit(tmp_path) == head  # results being written are not code
    (tmp_path / "code.py").write_text("x = 2\n")
    assert machine.git_commit(tmp_path) == f"{head}+dirty"


def test_record_run_writes_commit_wall_time_and_protocol_into_md_and_json(tmp_path):
    machine = _machine()
    (tmp_path / "r.md").write_text("# Title\n\n- date: today\n")
    (tmp_path / "r.json").write_text(json.dumps({"value": 1}))
    stamp = machine.record_run(tmp_path / "r.md", protocol_hash="a0741f0b76b1")
    md = (tmp_path / "r.md").read_text().splitlines()
    assert md[0] == "# Title" and md[2].startswith("- run: commit `")
    assert f"wall time **{stamp['wall_seconds']} s**" in md[2] and "`a0741f0b76b1`" in md[2]
    assert md[4] == "- date: today"
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["value"] == 1 and data["run"]["protocol_hash"] == "a0741f0b76b1"
    assert data["run"]["commit"] == machine.git_commit() and data["run"]["wall_seconds"] > 0
