"""Links between the project's Markdown pages resolve: the file exists and, for `#anchor`, a
heading of that file has GitHub's slug for it. The README's real-data results point into
docs/real-data.md section by section, so moving or renaming a section must not leave a reader
at a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_is_githubs():
    assert slug("Stanford-40 (real images)") == "stanford-40-real-images"
    assert slug("Segment views (TSN) on the real clips") == "segment-views-tsn-on-the-real-clips"
    assert slug("Reading a store in your own training loop") == "reading-a-store-in-your-own-training-loop"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_local_link_resolves(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(REPO)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_ci_runs_the_readme_test_command_from_the_section_it_names():
    """.ci/run pointed to a README section "Run the tests" that does not exist: the section it
    names is a heading of README.md, holding the test command .ci/run runs."""
    script = (REPO / ".ci" / "run").read_text()
    named = re.search(r'^# README\.md, "## ([^"]+)", its \*\*(\w+)\*\* paragraph', script, re.M)
    assert named, "the comment above .ci/run's test command names the README section"
    section, paragraph = named.groups()
    assert slug(section) in anchors(REPO / "README.md")
    readme = REPO / "README.md"
    text = readme.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = text.split(f"**{paragraph}**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    command = script.split(named.group(0), 1)[1].splitlines()[1]
    assert command.replace(" --quiet", "") in block
