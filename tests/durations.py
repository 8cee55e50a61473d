"""Each test module's measured duration, for ordering the modules of a parallel run.

`make test` sends each module whole to one xdist worker (`--dist loadfile`: a module's served
stack or browser starts once), in the order the workers collect them. conftest.py puts the
longest modules first, by `durations.json` beside this file, so that no long module starts
last while the other workers sit idle; modules it does not name (new ones) come after them.
The figures only order the modules: nothing asserts on them.

Refresh them from a run's JUnit report (any run: serial or parallel, whole or in part, the
modules it ran are updated, the others kept):

    .venv/bin/python -m pytest --junitxml=/tmp/junit.xml ...
    .venv/bin/python -m tests.durations /tmp/junit.xml
"""

from __future__ import annotations

import collections
import functools
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DURATIONS = Path(__file__).resolve().parent / "durations.json"


@functools.cache
def module_seconds() -> dict[str, float]:
    """Seconds per module path (`tests/test_x.py`), as last measured."""
    try:
        return json.loads(DURATIONS.read_text())
    except FileNotFoundError:
        return {}


def _module_of(classname: str) -> str | None:
    """`tests.test_x.TestY` -> `tests/test_x.py` (the longest dotted prefix that is a file)."""
    parts = classname.split(".")
    for end in range(len(parts), 0, -1):
        path = "/".join(parts[:end]) + ".py"
        if (REPO_ROOT / path).is_file():
            return path
    return None


def from_junit(report: Path) -> dict[str, float]:
    seconds: collections.Counter[str] = collections.Counter()
    for case in ET.parse(report).iter("testcase"):
        module = _module_of(case.get("classname", ""))
        if module:
            seconds[module] += float(case.get("time") or 0)
    return dict(seconds)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.durations JUNIT_XML")
    measured = from_junit(Path(sys.argv[1]))
    # a module that only skipped (no Chromium, say) keeps its earlier figure
    merged = {**module_seconds(), **{name: s for name, s in measured.items() if s > 0}}
    ordered = {name: round(merged[name], 1) for name in sorted(merged)}
    DURATIONS.write_text(json.dumps(ordered, indent=1) + "\n")
    print(f"{DURATIONS.relative_to(REPO_ROOT)}: {len(ordered)} modules")
