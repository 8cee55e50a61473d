"""Run mutmut's mutants one at a time, each in a new pytest process (docs/mutation.md).

mutmut 3 runs each mutant in a child forked from its own process, which has run the tests
already: a child inherits what that process built (the router connection pool, caches), so a
mutant of code that runs once per process never runs, and after a child died badly the next
ones were counted killed in 0.2 s. Here each mutant gets a new interpreter, the tests mutmut's
stats found for its function (fastest first) after the `--extra` ones (first: the tests that
were written to kill that file's survivors, and tests mutmut cannot see because they run the
code in a subprocess), and `-x`.

    mutmut run "inference.upstream.x_pool*"    # once: makes mutants/ and its stats
    python -m tests.mutation /tmp/upstream.jsonl inference.upstream.x_pool \\
        --extra tests/test_pooled_connections.py

Each result is a JSON line (name, exit code, seconds, the first failure): 0 lived, 1 killed,
"timeout" (three times the tests' measured time, plus 90 s) killed. A name already in the
output file is not run again: delete its line to rerun it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

MUTANTS = Path("mutants")
_MUTANT = re.compile(r"def (x\S*?__mutmut_\d+)\(")


def mutant_names(module: str) -> list[str]:
    source = (MUTANTS / (module.replace(".", "/") + ".py")).read_text()
    names = {f"{module}.{name}" for name in _MUTANT.findall(source)}
    return sorted(names, key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1])))


def run_one(name: str, tests: list[str], budget: float) -> dict:
    started = time.monotonic()
    env = {**os.environ, "MUTANT_UNDER_TEST": name}
    env.setdefault("PORTAL_TEST_RUN_ID", "mutation")  # one test database, kept (--reuse-db)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider"]
    try:
        result = subprocess.run(
            [*command, "--reuse-db", *tests],
            cwd=MUTANTS,
            env=env,
            capture_output=True,
            text=True,
            timeout=budget,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"name": name, "rc": "timeout", "secs": round(time.monotonic() - started, 1)}
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    return {
        "name": name,
        "rc": result.returncode,
        "secs": round(time.monotonic() - started, 1),
        "failed": failed[:1],
    }


def main(argv: list[str]) -> None:
    out, *prefixes = argv
    extra: list[str] = []
    if "--extra" in prefixes:
        at = prefixes.index("--extra")
        prefixes, extra = prefixes[:at], prefixes[at + 1 :]
    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    tests_of = stats["tests_by_mangled_function_name"]
    seconds = stats["duration_by_test"]
    output = Path(out)
    done = set()
    if output.exists():
        done = {json.loads(line)["name"] for line in output.read_text().splitlines() if line}
    modules = {p.split(".x")[0] for p in prefixes}
    wanted = [
        name
        for module in sorted(modules)
        for name in mutant_names(module)
        if name.startswith(tuple(prefixes)) and name not in done
    ]
    print(f"{len(wanted)} mutants", flush=True)
    for name in wanted:
        found = sorted(
            tests_of.get(name.rsplit("__mutmut_", 1)[0], []), key=lambda t: seconds.get(t, 0.0)
        )
        tests = extra + [t for t in found if t not in extra]
        budget = 3 * sum(seconds.get(t, 1.0) for t in tests) + 90
        record = run_one(name, tests, budget)
        with output.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(name, record["rc"], record["secs"], *record.get("failed", []), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
