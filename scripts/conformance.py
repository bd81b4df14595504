#!/usr/bin/env python3
"""Run the public HTTP cache conformance suite against the gateway and score it.

The suite is the npm package http-cache-tests 0.4.5, the one cache-tests.fyi
publishes (pinned, with its dependencies, by scripts/conformance/package*.json).
This script:

1. installs it with `npm ci` into its own temp dir (no npm, or no registry:
   one line saying so, exit status 3; never a silent pass);
2. starts the suite's origin server (`server/server.mjs`, what `npm run server`
   runs; its port comes from `npm_config_port`) on a free 127.0.0.1 port;
3. starts the gateway binary in strict mode in front of it, on free ports;
4. runs the suite's CLI (`npm run cli --base=...`) through the gateway and keeps
   its raw JSON;
5. scores it, and the results the package publishes for nginx, Varnish, Squid,
   Apache httpd and Apache Traffic Server, with the same code (see SCORING);
6. optionally writes docs/results/conformance.json + CONFORMANCE.md, and
   optionally checks the score against a committed baseline.

Every process it starts is ended by its PID; every step is bounded by one
deadline (--timeout).

    python3 scripts/conformance.py                  # run and print the score
    python3 scripts/conformance.py --write-docs     # ... and regenerate docs/results
    python3 scripts/conformance.py --check-baseline docs/results/conformance.json
    python3 scripts/conformance.py --rescore docs/results/conformance.json --write-docs
                                  # regenerate the docs from the committed run
                                  # (after editing the explanations file)

Exit status: 0 ok; 1 the baseline check failed; 2 bad usage or a broken run
(a process did not start, the CLI printed no results); 3 node/npm or the npm
registry cannot be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "scripts" / "conformance"
DOCS = ROOT / "docs" / "results"
JSON_OUT = DOCS / "conformance.json"
MD_OUT = DOCS / "CONFORMANCE.md"
EXPLANATIONS = DOCS / "conformance-explanations.toml"
SUITE = "http-cache-tests"
SUITE_VERSION = "0.4.5"

# Strict mode: no operator override of the origin's freshness (issue 10).
STRICT_FLAGS = ["--ttl", "0s", "--stale-ttl", "0s", "--stale-if-error", "0s", "--negative-ttl", "0s"]
# The suite's CLI runs its tests 100 at a time (client/runner.mjs chunkSize);
# the overload gate's default budget (256 origin requests at once) is above
# that, so the gateway runs with exactly the flags issue 10 names.
GATE_FLAGS: list[str] = []

# The published implementations compared against (file in the package's
# results/, as its results/index.mjs lists them).
PEERS = [
    ("nginx.json", "nginx"),
    ("varnish.json", "Varnish"),
    ("squid.json", "Squid"),
    ("apache.json", "Apache httpd"),
    ("trafficserver.json", "Apache Traffic Server"),
]

# Tests of the pinned package whose expectation the suite's current revision
# (newer than the npm package; cache-tests.fyi runs it) reverses, sending the
# same requests (`age-parse-dup-old`: see below): an `Age` that is not a non-negative integer is ignored, and
# of a list or of repeated lines the first value counts, so these responses
# are fresh. Every published peer fails all six as 0.4.5 words them. Each is
# scored by the current revision's expectation (`cached`): the suite's own
# result is flipped — a pass (response 2 not from the cache) becomes the
# current revision's failure, its "comes from cache" failure a pass — for the
# gateway and the peers alike, before the suite's verdict code runs. The raw
# results in conformance.json stay what the suite reported.
REVISED_TO_CACHED = (
    "age-parse-nonnumeric",
    "age-parse-negative",
    "age-parse-float",
    "age-parse-prefix-twoline",
    "age-parse-dup-0",
    "age-parse-dup-0-twoline",
    # 0.4.5 sends `Age: 3600, 3600` on one line, the current revision two
    # lines of 3600; by its rules (`age-parse-prefix`: of a list the first
    # value counts) both are an age of 3600, fresh under `max-age=10000`.
    "age-parse-dup-old",
)
NOT_CACHED_FAILED = "Response 2 comes from cache"
CACHED_FAILED = "Response 2 does not come from cache"


def revise(results: dict) -> dict:
    """The suite's results with REVISED_TO_CACHED scored by the current revision."""
    out = dict(results)
    for tid in REVISED_TO_CACHED:
        r = out.get(tid)
        if r is True:
            out[tid] = ["Assertion", CACHED_FAILED]
        elif isinstance(r, list) and len(r) > 1 and r[0] == "Assertion" and str(r[1]) == NOT_CACHED_FAILED:
            out[tid] = True
    return out


SCORING = """\
- **Tests that apply to a shared cache**: every test the suite's CLI runs against
  a non-browser cache: `tests/index.mjs` plus `tests/surrogate-control.mjs` (the
  CLI adds it), minus the tests marked `browser_only` (client/runner.mjs skips
  them unless it drives a browser cache). Tests marked `browser_skip` apply (they
  are skipped only in browsers). 0.4.5 has no other audience flag (no
  `cdn_only`). That is {applicable} of {total} tests: {required} required, {optimal}
  optimal, {check} behaviour checks.
- **Verdict per test**: the suite's own `determineTestResult` (lib/display.mjs,
  what cache-tests.fyi shows), dependencies honoured: a test whose `depends_on`
  test did not pass (or answer yes) is *dependency failed* and neither passes nor
  fails; a test that threw a setup error is *setup failed*.
- **Kinds**: `required` (or no kind) counts as required: pass or fail;
  `optimal`: pass or optional fail; `check`: yes/no, informational only.
- **Counts**: required pass, required fail, optimal pass, and the tests not
  scored because a test they depend on failed (all kinds); required tests that
  failed during setup, were retried or were not tested are counted apart.
- **Revised expectations**: {revised} send the same requests in the suite's
  current revision (newer than the npm package; `age-parse-dup-old` there sends
  its two `Age: 3600` as two lines instead of one list, which the same rule
  reads alike) but expect the opposite: an
  `Age` that is not a non-negative integer is ignored, and of a list or of
  repeated lines the first value counts, so those responses are fresh. They
  are scored by the current revision, for every system alike: the suite's own
  result flipped (a pass becomes "Response 2 does not come from cache", a
  "Response 2 comes from cache" failure a pass); the raw results kept in
  conformance.json are the suite's own."""


class Fatal(Exception):
    """A broken run: one line for the user, and an exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------
# processes


class Procs:
    """The processes this script started; ended by PID, never by name."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise Fatal(f"conformance: out of time (--timeout) before {what}")
        return left


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise Fatal(f"conformance: {what} exited with status {proc.returncode} at start-up: {' '.join(tail)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise Fatal(f"conformance: {what} did not listen on 127.0.0.1:{port} within {seconds:.0f}s")


# --------------------------------------------------------------------------
# the suite


def install_suite(dest: Path, deadline: Deadline) -> Path:
    """npm ci the pinned suite into dest; returns the package directory."""
    pkg = dest / "node_modules" / SUITE
    if (pkg / "package.json").exists():
        return pkg
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise Fatal(f"conformance: `{tool}` is not on PATH; cannot run the {SUITE} suite (install Node.js and npm)", 3)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(SUPPORT / name, dest / name)
    args = [
        "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error",
        "--fetch-retries=1", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=5000",
        "--fetch-timeout=60000",
    ]
    try:
        done = subprocess.run(args, cwd=dest, capture_output=True, text=True,
                              timeout=min(deadline.left("npm ci"), 240))
    except subprocess.TimeoutExpired:
        raise Fatal(f"conformance: npm could not install {SUITE}@{SUITE_VERSION}: the npm registry did not answer in time", 3) from None
    if done.returncode != 0 or not (pkg / "package.json").exists():
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        why = next((line for line in lines if "reason:" in line or "request to" in line),
                   next((line for line in lines if line.startswith("npm error code")), lines[-1] if lines else ""))
        raise Fatal(f"conformance: npm could not install {SUITE}@{SUITE_VERSION} (npm registry unreachable?): {why}", 3)
    version = json.loads((pkg / "package.json").read_text())["version"]
    if version != SUITE_VERSION:
        raise Fatal(f"conformance: installed {SUITE} {version}, expected {SUITE_VERSION}")
    return pkg


def classify(pkg: Path, result_files: list[Path], deadline: Deadline) -> dict:
    """Run the suite's own verdict code (scripts/conformance/classify.mjs)."""
    done = subprocess.run(
        ["node", "--no-warnings", str(SUPPORT / "classify.mjs"), str(pkg), *map(str, result_files)],
        capture_output=True, text=True, timeout=min(deadline.left("classifying"), 60),
    )
    if done.returncode != 0:
        raise Fatal(f"conformance: classifying results failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def gateway_binary(arg: str | None, deadline: Deadline) -> Path:
    if arg:
        path = Path(arg).resolve()
        if not path.is_file():
            raise Fatal(f"conformance: no gateway binary at {path}")
        return path
    print("conformance: cargo build -p gateway --bin gateway", file=sys.stderr)
    done = subprocess.run(["cargo", "build", "-p", "gateway", "--bin", "gateway"], cwd=ROOT,
                          timeout=deadline.left("building the gateway"))
    if done.returncode != 0:
        raise Fatal("conformance: cargo build -p gateway --bin gateway failed")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "gateway"


def run_suite(pkg: Path, gateway: Path, work: Path, deadline: Deadline) -> tuple[dict, list[str]]:
    """Server + gateway + CLI; returns the raw results and the gateway command."""
    procs = Procs()

    def on_signal(signum, _frame):
        procs.stop_all()
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        origin_port, listen_port, admin_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("npm_")}
        server_env = env | {
            "npm_config_protocol": "http",
            "npm_config_port": str(origin_port),
            "npm_config_pidfile": str(work / "server.pid"),
        }
        server_log = work / "server.log"
        with server_log.open("wb") as log:
            server = procs.start(
                ["node", "--require", str(SUPPORT / "loopback.cjs"), "server/server.mjs"],
                cwd=pkg, env=server_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        wait_port(origin_port, server, "the suite's server", server_log, min(deadline.left("server start"), 20))

        command = [
            str(gateway),
            "--listen", f"127.0.0.1:{listen_port}",
            "--admin-listen", f"127.0.0.1:{admin_port}",
            "--origin", f"http://127.0.0.1:{origin_port}",
            *STRICT_FLAGS, *GATE_FLAGS,
        ]
        gateway_log = work / "gateway.log"
        with gateway_log.open("wb") as log:
            gw = procs.start(command, cwd=work, env=env | {"NO_COLOR": "1"},
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(listen_port, gw, "the gateway", gateway_log, min(deadline.left("gateway start"), 30))

        cli_env = env | {
            "npm_config_base": f"http://127.0.0.1:{listen_port}",
            # cli.mjs reads `npm_config_id || npm_package_config_id` and runs
            # every test only when it is the empty string.
            "npm_package_config_id": "",
        }
        cli = procs.start(["node", "--no-warnings", "cli.mjs"], cwd=pkg, env=cli_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        try:
            out, err = cli.communicate(timeout=deadline.left("running the suite"))
        except subprocess.TimeoutExpired:
            raise Fatal("conformance: the suite's CLI did not finish before --timeout") from None
        if gw.poll() is not None:
            raise Fatal(f"conformance: the gateway exited (status {gw.returncode}) during the run; see its log")
        try:
            raw = json.loads(out)
        except json.JSONDecodeError:
            tail = (err.strip() or out.strip()).splitlines()[-1:]
            raise Fatal(f"conformance: the suite's CLI printed no JSON results: {' '.join(tail)}") from None
        return raw, command
    finally:
        procs.stop_all()
        for s, handler in old.items():
            signal.signal(s, handler)


# --------------------------------------------------------------------------
# scoring (one function for the gateway and the peers)


def score(tests: list[dict], verdicts: dict[str, str]) -> dict:
    applicable = [t for t in tests if not t["browser_only"]]
    counts = {
        "required_pass": 0, "required_fail": 0, "required_setup_fail": 0,
        "required_other": 0, "required_dependency_failed": 0,
        "optimal_pass": 0, "optimal_fail": 0, "check_yes": 0,
        "dependency_failed": 0, "applicable": len(applicable),
    }
    for t in applicable:
        v = verdicts[t["id"]]
        if v == "dependency_fail":
            counts["dependency_failed"] += 1
        if t["kind"] == "required":
            key = {"pass": "required_pass", "fail": "required_fail", "setup_fail": "required_setup_fail",
                   "dependency_fail": "required_dependency_failed"}.get(v, "required_other")
            counts[key] += 1
        elif t["kind"] == "optimal":
            if v == "pass":
                counts["optimal_pass"] += 1
            elif v == "optional_fail":
                counts["optimal_fail"] += 1
        elif t["kind"] == "check" and v == "yes":
            counts["check_yes"] += 1
    return counts


def blocked_roots(tests: list[dict], verdicts: dict[str, str]) -> dict[str, list[str]]:
    """Root test id -> the applicable tests it leaves dependency-failed.

    A root is a test on a dependency path that did not pass and is not itself
    dependency-failed (its own failure, setup failure, ...)."""
    by_id = {t["id"]: t for t in tests}
    memo: dict[str, set[str]] = {}

    def roots_of(tid: str) -> set[str]:
        if tid in memo:
            return memo[tid]
        found: set[str] = set()
        for dep in by_id[tid]["depends_on"]:
            v = verdicts[dep]
            if v == "dependency_fail":
                found |= roots_of(dep)
            elif v not in ("pass", "yes"):
                found.add(dep)
        memo[tid] = found
        return found

    blocked: dict[str, list[str]] = {}
    for t in tests:
        if not t["browser_only"] and verdicts[t["id"]] == "dependency_fail":
            for root in roots_of(t["id"]):
                blocked.setdefault(root, []).append(t["id"])
    return dict(sorted(blocked.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def message(raw_result) -> str:
    if isinstance(raw_result, list) and len(raw_result) > 1:
        return " ".join(str(raw_result[1]).split())
    return ""


def load_explanations(test_ids: list[str]) -> dict[str, str]:
    """Test id -> the hand-written explanation (docs/results/conformance-explanations.toml).

    The file holds text only, in one [explanations] table keyed by test id or
    by a glob over test ids (`status-*-fresh`; an exact id wins). Counts never
    live there: they come from the run."""
    if not EXPLANATIONS.exists():
        return {}
    name = EXPLANATIONS.relative_to(ROOT)
    try:
        data = tomllib.loads(EXPLANATIONS.read_text())
    except tomllib.TOMLDecodeError as e:
        raise Fatal(f"conformance: {name}: {e}") from None
    if set(data) != {"explanations"}:
        raise Fatal(f"conformance: {name} must hold one [explanations] table and nothing else")
    out: dict[str, str] = {}
    for key, value in data["explanations"].items():
        if not isinstance(value, str):
            raise Fatal(f"conformance: {name}: {key!r} must be a text explanation, not {type(value).__name__}")
        matched = fnmatch.filter(test_ids, key)
        if not matched:
            raise Fatal(f"conformance: {name}: {key!r} matches no test id of the suite")
        for tid in matched:
            if tid == key or tid not in out:
                out[tid] = " ".join(value.split())
    return out


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.node()} ({cpu + ', ' if cpu else ''}{os.cpu_count()} cores{mem}, {platform.system()} {platform.release()})"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "gateway/src", "gateway/Cargo.toml", "stampede-layer/src", "stampede-layer/Cargo.toml", "Cargo.toml", "Cargo.lock"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" (with uncommitted changes to the gateway)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def build_document(meta: dict, classified: dict, raw: dict, gw_key: str, peer_keys: dict[str, str]) -> dict:
    tests = classified["tests"]
    verdicts = classified["verdicts"][gw_key]
    versions = {p["file"]: p.get("version", "") for p in classified["peers"]}
    doc = {
        "_note": "generated by scripts/conformance.py; do not edit by hand",
        "suite": f"{SUITE}@{SUITE_VERSION}",
        **meta,
        "counts": score(tests, verdicts),
        "peers": [
            {"name": name, "file": f"results/{file}", "version": versions.get(file, ""),
             "counts": score(tests, classified["verdicts"][peer_keys[file]])}
            for file, name in PEERS
        ],
        "blocked_roots": blocked_roots(tests, verdicts),
        "tests": [
            {"id": t["id"], "suite": t["suite_name"], "kind": t["kind"],
             "applies": not t["browser_only"], "verdict": verdicts[t["id"]],
             "result": raw.get(t["id"])}
            for t in tests
        ],
    }
    return doc


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict, classified: dict, explanations: dict[str, str]) -> str:
    tests = {t["id"]: t for t in classified["tests"]}
    c = doc["counts"]
    kinds = {"required": 0, "optimal": 0, "check": 0}
    for t in classified["tests"]:
        if not t["browser_only"]:
            kinds[t["kind"]] += 1
    out = [
        "# HTTP cache conformance",
        "",
        "<!-- generated by scripts/conformance.py from the suite's JSON; do not edit by hand -->",
        "_Generated by `scripts/conformance.py` from the suite's JSON output; do not edit by hand. "
        "Explanations live in `docs/results/conformance-explanations.toml`._",
        "",
        f"The public HTTP cache conformance suite ([cache-tests.fyi](https://cache-tests.fyi/), npm package "
        f"`{doc['suite']}`) run through the gateway in **strict mode** (no operator override of the origin's "
        f"freshness), in front of the suite's own origin server, measured {doc['measured_at']} on "
        f"{doc['machine']}, gateway at commit `{doc['commit']}`, {doc['runtime_seconds']:.0f} s.",
        "",
        "Produced by:",
        "",
        "```sh",
        "python3 scripts/conformance.py --write-docs",
        "```",
        "",
        "which runs the gateway as",
        "",
        "```sh",
        " ".join(doc["gateway_command"]),
        "```",
        "",
        "(These are the zeros issue 10 names; `--http-strict` is the same preset in one flag. The suite runs "
        "100 tests at once, below the overload gate's default budget of 256 requests at the origin.)",
        "",
        "## Score",
        "",
        "Counting the tests that apply to a shared cache; the other caches' rows score the results the suite "
        "package publishes for them (`results/*.json`, versions as published) with the same code.",
        "",
        "| system | version | required: pass | required: fail | required: setup failed / other | optimal: pass "
        "| not scored: a dependency failed |",
        "|---|---|--:|--:|--:|--:|--:|",
        f"| **gateway (strict)** | `{doc['commit'].split()[0]}` | **{c['required_pass']}** | **{c['required_fail']}** "
        f"| {c['required_setup_fail']} / {c['required_other']} | {c['optimal_pass']} | {c['dependency_failed']} |",
    ]
    for peer in doc["peers"]:
        p = peer["counts"]
        out.append(
            f"| {peer['name']} | {peer['version']} | {p['required_pass']} | {p['required_fail']} "
            f"| {p['required_setup_fail']} / {p['required_other']} | {p['optimal_pass']} | {p['dependency_failed']} |"
        )
    out += [
        "",
        f"Of {c['applicable']} applicable tests, {kinds['required']} are required, {kinds['optimal']} optimal and "
        f"{kinds['check']} behaviour checks. \"Other\" is retried (the cache sent a request twice) or not tested "
        "(the published file has no result for it).",
        "",
        "### How it is scored",
        "",
        SCORING.format(applicable=c["applicable"], total=len(classified["tests"]),
                       revised=", ".join(f"`{t}`" for t in REVISED_TO_CACHED), **kinds),
        "",
        "## Remaining required failures",
        "",
    ]
    failing = [t for t in doc["tests"] if t["applies"] and t["kind"] == "required"
               and t["verdict"] in ("fail", "setup_fail", "retry", "harness_fail")]
    if not failing:
        out.append("None.")
    else:
        out += [
            "The suite's own failure message, and where one has been written, an explanation.",
            "",
            "| test id | group | test | verdict | the suite says | explanation |",
            "|---|---|---|---|---|---|",
        ]
        for t in failing:
            meta = tests[t["id"]]
            out.append(
                f"| `{t['id']}` | {md_escape(t['suite'])} | {md_escape(meta['name'])} | {t['verdict'].replace('_', ' ')} "
                f"| {md_escape(message(t['result']))} | {md_escape(explanations.get(t['id'], ''))} |"
            )
    roots = doc["blocked_roots"]
    out += [
        "",
        "## What blocks the tests that were not scored",
        "",
        f"{c['dependency_failed']} applicable tests ran but are not scored, because a test they depend on did not "
        "pass. Each root below is the first non-passing test on their dependency path; a test blocked by two "
        "roots is listed under both.",
        "",
        "\"Required, passing on their own\": blocked required tests whose own result is already a pass; they "
        "count as required passes once their root passes.",
        "",
        "| root test | group | its verdict | blocks | of which required | required, passing on their own "
        "| the suite says | explanation |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    by_id = {t["id"]: t for t in doc["tests"]}
    for root, blocked in roots.items():
        t = by_id[root]
        required = [by_id[b] for b in blocked if by_id[b]["kind"] == "required"]
        ready = sum(1 for b in required if b["result"] is True)
        out.append(
            f"| `{root}` | {md_escape(t['suite'])} | {t['kind']}: {t['verdict'].replace('_', ' ')} | {len(blocked)} "
            f"| {len(required)} | {ready} | {md_escape(message(t['result']))} | {md_escape(explanations.get(root, ''))} |"
        )
    out += [
        "",
        "The per-test verdicts and raw results are in [conformance.json](conformance.json).",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------
# baseline


def check_baseline(doc: dict, baseline_path: Path) -> list[str]:
    base = json.loads(baseline_path.read_text())
    bc, c = base["counts"], doc["counts"]
    problems = []
    if c["required_pass"] < bc["required_pass"]:
        problems.append(f"required pass {c['required_pass']} < baseline {bc['required_pass']}")
    if c["required_fail"] > bc["required_fail"]:
        problems.append(f"required fail {c['required_fail']} > baseline {bc['required_fail']}")
    before = {t["id"]: t["verdict"] for t in base["tests"]}
    regressed = [t["id"] for t in doc["tests"] if t["kind"] == "required" and t["applies"]
                 and before.get(t["id"]) == "pass" and t["verdict"] != "pass"]
    improved = [t["id"] for t in doc["tests"] if t["kind"] == "required" and t["applies"]
                and before.get(t["id"]) != "pass" and t["verdict"] == "pass"]
    if regressed:
        print(f"conformance: required tests that passed in the baseline and do not now: {', '.join(regressed)}", file=sys.stderr)
    if improved:
        print(f"conformance: required tests that pass now and did not in the baseline: {', '.join(improved)}", file=sys.stderr)
    return problems


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", help="gateway binary (default: cargo build -p gateway --bin gateway, then target/debug/gateway)")
    ap.add_argument("--suite-dir", type=Path, help="install the suite here and keep it (default: a temp dir, removed)")
    ap.add_argument("--raw-out", type=Path, help="also save the suite's raw JSON here")
    ap.add_argument("--rescore", type=Path, metavar="CONFORMANCE_JSON",
                    help="do not run: rescore the raw results kept in a conformance.json (e.g. after editing explanations)")
    ap.add_argument("--write-docs", action="store_true", help=f"write {JSON_OUT.relative_to(ROOT)} and {MD_OUT.relative_to(ROOT)}")
    ap.add_argument("--check-baseline", type=Path, metavar="CONFORMANCE_JSON",
                    help="fail (exit 1) if required pass dropped below, or required fail rose above, this baseline")
    ap.add_argument("--timeout", type=float, default=300, help="bound on the whole run, seconds (default 300)")
    args = ap.parse_args()

    deadline = Deadline(args.timeout)
    started = time.monotonic()
    temp = Path(tempfile.mkdtemp(prefix="conformance-"))
    try:
        pkg = install_suite(args.suite_dir or temp / "suite", deadline)
        if args.rescore:
            previous = json.loads(args.rescore.read_text())
            raw = {t["id"]: t["result"] for t in previous["tests"] if t["result"] is not None}
            meta = {k: previous[k] for k in ("measured_at", "machine", "commit", "runtime_seconds", "gateway_command")}
        else:
            gateway = gateway_binary(args.gateway, deadline)
            work = temp / "run"
            work.mkdir()
            measured_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            raw, command = run_suite(pkg, gateway, work, deadline)
            shown = ["gateway", *command[1:]]
            meta = {
                "measured_at": measured_at,
                "machine": machine(),
                "commit": git_commit(),
                "runtime_seconds": round(time.monotonic() - started, 1),
                "gateway_command": [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", a) for a in shown],
            }
        if args.raw_out:
            args.raw_out.write_text(json.dumps(raw, indent=2) + "\n")
        raw_file = temp / "gateway.json"
        raw_file.write_text(json.dumps(revise(raw)))
        # The peers' published results, scored the same way (revised copies).
        (temp / "peers").mkdir()
        peer_files = {file: temp / "peers" / file for file, _ in PEERS}
        for file, path in peer_files.items():
            published = json.loads((pkg / "results" / file).read_text())
            path.write_text(json.dumps(revise(published)))
        classified = classify(pkg, [raw_file, *peer_files.values()], deadline)
        unknown = sorted(set(raw) - {t["id"] for t in classified["tests"]})
        if unknown:
            raise Fatal(f"conformance: results for tests the suite does not define: {', '.join(unknown[:5])}")
        applicable = [t for t in classified["tests"] if not t["browser_only"]]
        missing = [t["id"] for t in applicable if t["id"] not in raw]
        if missing:
            raise Fatal(f"conformance: the run has no result for {len(missing)} applicable tests (e.g. {missing[0]})")
        doc = build_document(meta, classified, raw, str(raw_file), {f: str(p) for f, p in peer_files.items()})
        explanations = load_explanations([t["id"] for t in classified["tests"]])

        c = doc["counts"]
        print(json.dumps({"gateway": c, **{p["name"]: p["counts"] for p in doc["peers"]}}, indent=2))
        print(
            f"conformance: gateway strict: required {c['required_pass']} pass, {c['required_fail']} fail, "
            f"{c['required_setup_fail']} setup failed; optimal {c['optimal_pass']} pass; "
            f"{c['dependency_failed']} not scored (dependency failed); {doc['runtime_seconds']:.0f}s",
            file=sys.stderr,
        )
        if args.write_docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            JSON_OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
            MD_OUT.write_text(render_markdown(doc, classified, explanations))
            print(f"conformance: wrote {JSON_OUT.relative_to(ROOT)} and {MD_OUT.relative_to(ROOT)}", file=sys.stderr)
        if args.check_baseline:
            problems = check_baseline(doc, args.check_baseline)
            if problems:
                print(f"conformance: REGRESSION against {args.check_baseline}: {'; '.join(problems)}", file=sys.stderr)
                return 1
            print(f"conformance: no regression against {args.check_baseline}", file=sys.stderr)
        return 0
    except Fatal as e:
        print(str(e), file=sys.stderr)
        return e.status
    finally:
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
