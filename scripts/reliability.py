#!/usr/bin/env python3
"""Run the reliability tests and write docs/RELIABILITY.md from what they report.

The fault tests (gateway/tests/{faults,lock_crash,cluster,hostile}.rs) print
`RELIABILITY {json}` lines with their figures; this script runs them in release
mode, collects those lines and the pass/fail of every test, and renders the
page with the date, the machine and the command. Optionally it adds the soak
figures from `stampede-bench soak --output FILE` (see --soak).

The fault campaign's section (between `<!-- campaign:start -->` and
`<!-- campaign:end -->`) is written by `stampede-bench campaign render` from
docs/results/campaign.json; this script keeps it as it is and adds the
campaign's row to the table from that JSON.

Usage: python3 scripts/reliability.py [--soak docs/results/soak.json]
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

CAMPAIGN_JSON = "docs/results/campaign.json"
CAMPAIGN_START, CAMPAIGN_END = "<!-- campaign:start -->", "<!-- campaign:end -->"

TESTS = ["faults", "lock_crash", "cluster", "hostile", "fleet_faults", "fencing", "herds", "flight_memory", "connections", "forwarding", "admin_auth", "cli", "memory_bound", "cancellation", "edge", "purge", "drain", "lane"]

PROTECTIONS = [
    ("Redis outage", "faults::redis_outage_is_survived_and_recovered_from",
     "Circuit breaker around the Redis store (`FallbackStore`): after 3 failures, store and lock go to an in-process store; a probe every 0.5–5 s returns to Redis by itself."),
    ("Origin outage / 5xx", "faults::origin_errors_serve_stale_copies",
     "stale-if-error: a stale copy in hand is served when the origin fails; never-cached keys fail fast (upstream timeout → 504, unreachable → 502)."),
    ("Lock holder crash", "lock_crash::a_crashed_lock_holder_is_taken_over_after_the_lock_ttl",
     "Locks expire (`PX`); losers try the lock on every wake-up and take it over once it expired; the dead holder's lease is void, so a late writer is refused."),
    ("Redis Cluster", "cluster::store_lock_and_fencing_work_on_a_cluster",
     "All keys of one cache key share a hash tag; every key a script touches is passed in KEYS; the whole store contract (`testing::contract`) passes on the cluster."),
    ("Malformed requests", "hostile::malformed_requests_get_4xx_and_the_gateway_keeps_serving",
     "hyper rejects bad request lines, headers, huge URIs and headers with 4xx; keys are derived from any valid target without panics (fuzz-style unit tests in key.rs)."),
    ("Origin sends garbage", "hostile::an_origin_sending_garbage_is_a_502", "Proxy errors are answers (502), not failures."),
    ("Origin stalls mid-body", "hostile::an_origin_stalling_mid_body_does_not_hang_the_gateway",
     "Idle timeout between body chunks; the cache never waits forever to buffer."),
    ("Bodies over the buffer limit", "hostile::bodies_over_the_buffer_limit_stream_through_uncached",
     "Streamed through whole, never cached, never truncated."),
    ("Cache poisoning", "hostile::unkeyed_headers_cannot_poison_the_cache",
     "Unkeyed override headers (X-Forwarded-Host, X-Original-URL, …) are not forwarded; Host is the origin's; keys are normalised."),
    ("Vary / max-age", "hostile::vary_and_max_age_are_honoured", "Vary'd request headers are checked on every read; origin max-age wins over --ttl."),
    ("Origin slower than the lock", "fleet_faults::an_origin_slower_than_the_lock_gets_one_rebuild_at_a_time",
     "Lease renewal: the lock holder extends its lock and its key's fence record every third of --lock-ttl while the rebuild runs (compare-and-expire; stops once the lease is void); a waiter never takes over a lock its holder renews; a whole-rebuild deadline (--fill-deadline) bounds it. The test also runs without renewal and asserts the takeover it prevents."),
    ("Purge during a rebuild", "fleet_faults::a_purge_during_a_rebuild_is_not_undone_by_it",
     "A delete raises the key's purge floor in its fence record: a fill whose lease was drawn before it is refused when it lands, however late (docs/LAYERS.md, Fencing)."),
    ("Paused leader, cold and warm key", "fencing::a_paused_leader_never_wins_on_a_cold_key",
     "Leases carry (epoch, seq) from a fence record that lives while leases keep it: a holder paused past its lock is refused when it resumes (its record lapsed or carries the later write); both gateways keep the newer version, one fencing rejection. Also `fencing::a_paused_leader_never_wins_on_a_warm_key`."),
    ("Lock-less fill racing a purge", "fencing::a_lockless_fill_does_not_undo_a_purge",
     "Every fill holds a lease drawn before it asks the origin — a lock-less one a ticket — so a purge after it started refuses its write (in-process store and Redis)."),
    ("Purge during a Redis outage", "fencing::a_purge_during_a_redis_outage_is_reported_as_failed",
     "A purge the shared store did not take is answered 503 with the failed paths, never `purged`; the fallback's entries are dropped when the breaker closes; a lease is never written in a store other than the one that drew it."),
    ("One client's junk variant", "fencing::one_clients_junk_variant_does_not_switch_caching_off",
     "A 4xx never marks a key hit-for-miss; a marker applies to its own variant only and never replaces a stored answer."),
    ("Key flood", "fleet_faults::a_flood_of_distinct_keys_leaves_redis_as_it_found_it",
     "Every Redis key the gateway writes (entry, lock, fence record) expires with what it serves or the last lease drawn on it; a purge adds nothing. A lost or evicted record voids its leases (safe under `allkeys-lru`, which compose's Redis runs with `maxmemory`)."),
    ("Cold large object, a herd", "herds::a_cold_large_object_is_fetched_once_and_streamed_to_every_waiter",
     "Streaming fill: one origin request; the body streams to every waiter as it arrives (read-while-write), stored when whole within --max-object-size. Across a fleet (`herds::a_cold_large_object_is_fetched_once_by_a_fleet`) the lock holder streams it through Redis to the other gateways' waiters."),
    ("Hot large object", "herds::a_hot_large_object_is_cached",
     "Objects up to --max-object-size (16 MiB) are stored; in Redis in 512 KiB chunks (`herds::a_hot_large_object_is_cached_by_a_fleet_in_redis_chunks`)."),
    ("Failing origin, a herd", "herds::a_failing_origin_gets_one_request_per_herd",
     "A failed rebuild's outcome goes to every request that waited on it — single-flight followers, and lock waiters on any gateway (`herds::a_failing_origin_gets_one_request_per_herd_from_a_fleet`) — never to later requests (5xx are not cached)."),
    ("Origin slower than the lock TTL, full stack", "herds::an_origin_slower_than_the_lock_gets_one_rebuild_in_flight",
     "A waiter tries the lock on every wake-up and takes over only a free lock: never a second rebuild while the holder renews its lease."),
    ("Vary: Accept-Encoding populations", "herds::vary_accept_encoding_is_one_stored_representation",
     "Fills ask for gzip; one stored representation serves every client (decompressed for those that do not accept gzip); other Vary headers get a slot per variant."),
    ("A 50 MiB flight to many clients", "flight_memory::a_flight_of_a_large_object_to_many_clients_stays_within_the_window",
     "A body over --max-object-size keeps a 4 MiB window per flight, not the object per client; a client that falls further behind is cut off, never served a gap. 200 clients here; RSS growth bound: window + 512 KiB per client + 32 MiB."),
    ("Gateway started during a Redis outage", "fleet_faults::a_gateway_started_during_a_redis_outage_comes_up_and_joins_later",
     "Lazy connect: the gateway waits 2 s for Redis, then serves from its in-process fallback; /readyz says `ready (degraded …)` (503 with --readyz-requires-redis); it joins Redis when it answers."),
    ("Slow and idle clients", "connections::slow_and_idle_clients_are_closed_within_the_timeouts_while_traffic_is_served",
     "Header-read timeout (--header-read-timeout, 10 s) and keep-alive idle timeout (--idle-timeout, 75 s) on both listeners."),
    ("Huge request headers", "connections::request_headers_over_the_limit_get_431",
     "--max-header-bytes (64 KiB): 431 and the connection closed."),
    ("Connection floods", "connections::connections_over_the_cap_are_refused_with_503",
     "--max-connections (4096) / --admin-max-connections (64): one more is answered 503 and closed."),
    ("Spoofed forwarding headers", "forwarding::client_forwarding_headers_are_replaced_by_default_and_via_is_added",
     "X-Forwarded-For / Forwarded replaced with the peer (or appended: --forwarded-headers append); Via added both ways."),
    ("Admin token guessing", "admin_auth::a_bad_token_is_401_whatever_the_body",
     "Constant-time token comparison before the body is read or parsed."),
    ("Purge by tag, fleet-wide", "purge::a_tag_purge_reaches_every_gateway_within_100ms",
     "Origin tags (`Surrogate-Key`, `Cache-Tag`) and path prefixes index each entry (Redis: a sorted set per tag on its own slot; bounded, expiring with its entries); a tag purge lists the tag's keys and runs the fenced per-key delete on each, and every gateway's near copies are dropped over pub/sub. 3 gateways, 10,000 entries over 100 tags: no old answer once the purge answered; the other entries stay hits. Also on the 3-node cluster (`cluster::store_lock_and_fencing_work_on_a_cluster`) and by prefix (`purge::a_prefix_purge_takes_the_paths_under_it_only`)."),
    ("Hard purge of a hot key (a herd of waiters)", "purge::a_soft_purge_of_a_hot_key_costs_one_origin_request_and_no_wait",
     "Soft purge (`\"soft\": true`): entries marked stale (fenced like a hard purge) and answered stale while one refresh runs fleet-wide: one origin request, no client waits — beside a hard purge of the same hot key, where the clients asking during the rebuild wait for it."),
    ("Tag purge racing a fill the index does not list yet", "purge::a_slow_fill_started_before_a_tag_purge_is_refused",
     "A purge records the tag's purge time first; a tagged fill adds itself to the index, then reads that record, then writes — refused unless its lease came after the purge fenced its key, or its origin request came more than the allowed clock skew (1 s) after the purge (docs/LAYERS.md, Fencing). Redis and the in-process store."),
    ("Shutdown under traffic (deploy, scale-in)", "drain::sigterm_turns_readiness_off_serves_through_the_delay_then_lets_requests_finish",
     "SIGTERM: /readyz 503 `draining` at once, both listeners serve through --shutdown-delay, then close; a rebuild in flight finishes and is answered; the process exits 0. SIGINT skips the delay; --shutdown-grace bounds requests in flight (`drain::sigint_skips_the_delay_and_the_grace_bounds_requests_in_flight`)."),
    ("Memory bound under a key flood", "memory_bound::rss_stays_within_the_bound_under_a_flood_of_keys_with_large_vary_values",
     "The in-process store weighs each entry with its body, headers and stored Vary request values against --memory-max-bytes (moka); RSS grows by at most the bound plus a documented overhead (half the bound + 32 MiB: moka's per-entry bookkeeping, allocator slack). 1 000 000 keys here."),
    ("Secrets in logs / plaintext TLS", "cli::rediss_works_and_never_falls_back_to_plaintext",
     "`rediss://` over TLS only (rustls, built-in roots + `--redis-ca`): a fake server at a rediss:// address receives a TLS record, never a command or the password; a plaintext redis-server at a rediss:// URL gets nothing written. Redis passwords redacted in every log line and error."),
    ("Leader's client disconnects mid-fill", "cancellation::a_leader_that_disconnects_mid_fill_does_not_cancel_it_across_a_fleet",
     "The rebuild runs detached (single-flight task, lock holder task): 20 waiters on two gateways get the whole answer, one origin request."),
    ("Waiters disconnect (HTTP/1 close)", "cancellation::waiters_that_disconnect_leave_at_once_and_free_what_they_held",
     "hyper, and the plain HTTP/1.1 lane, drop a closed connection's request at once: tasks fall back while the fill runs; tasks and RSS return to idle; the fill is stored."),
    ("Plain HTTP/1.1 lane answers as hyper", "lane::the_lane_answers_every_request_as_hyper_does",
     "Ordinary GETs on plain HTTP/1.1 are answered below hyper's dispatcher (issue #22). A mixed sequence (misses and hits, a chunked pass-through, 304, 206, 204, a private answer, absolute-form, then a HEAD and a POST that hand the connection to hyper) gets the same status, headers and body from a gateway with the lane and one with --http1-lane false. Pipelining, Connection: close, HTTP/1.0, a head sent a byte at a time (`lane::pipelined_closing_old_and_bodied_requests_are_answered_on_one_connection`) and bad or oversized heads (`lane::bad_and_oversized_heads_get_hypers_answers`) keep hyper's answers."),
    ("HTTP/2 rapid reset", "edge::http2_gets_the_http1_limits_streams_headers_idle_and_rapid_reset",
     "At most 20 streams reset before being accepted per connection (then GOAWAY), --max-concurrent-streams, header list size (431), idle and header-read timeouts on HTTP/2."),
]


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    # One stream, so cargo's "Running tests/x.rs" lines stay in order with
    # the test lines that follow them.
    # 1 M keys for the memory-bound test (100 k in CI's debug run).
    env = dict(os.environ, STAMPEDE_MEMORY_KEYS="1000000", STAMPEDE_FLIGHT_CLIENTS="200")
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soak", help="JSON summary written by `stampede-bench soak --output`")
    ap.add_argument("--out", default="docs/RELIABILITY.md")
    args = ap.parse_args()
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    cmd = ["cargo", "test", "--release", "-p", "gateway"]
    for t in TESTS:
        cmd += ["--test", t]
    cmd += ["--", "--nocapture", "--test-threads", "1"]
    proc = run(cmd)
    out = proc.stdout
    # --nocapture output interleaves: "test x ... " may be followed by the
    # test's own lines before its "ok", so track the pending test.
    results = {}
    figures = []
    current = pending = None
    for line in out.splitlines():
        m = re.match(r"^\s+Running tests/(\w+)\.rs", line)
        if m:
            current = m.group(1)
            continue
        if "RELIABILITY {" in line:
            figures.append(json.loads(line[line.index("RELIABILITY {") + len("RELIABILITY "):]))
            line = line[: line.index("RELIABILITY {")]
        m = re.match(r"^test (\S+) \.\.\. ?(.*)$", line)
        if m and current:
            pending = f"{current}::{m.group(1)}"
            line = m.group(2)
        status = line.strip().split(" ")[-1] if line.strip() else ""
        if pending and status in ("ok", "FAILED", "ignored"):
            results[pending] = status
            pending = None
    if proc.returncode != 0:
        sys.stderr.write(out[-4000:])
        print("reliability tests failed; RELIABILITY.md not written", file=sys.stderr)
        return 1

    soak = None
    if args.soak and os.path.exists(args.soak):
        with open(args.soak) as f:
            soak = json.load(f)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    lines = [
        "# Reliability",
        "",
        "Generated by `python3 scripts/reliability.py"
        + (f" --soak {args.soak}" if soak else "")
        + f"` on {now}, on `{platform.node()}` ({os.cpu_count()} cores{mem}, "
        + f"{platform.system()} {platform.release()}, release build). "
        + "Every figure below is printed by the test named next to it; nothing is typed by hand.",
        "",
        "Every protection is an automated test with real processes on 127.0.0.1 "
        "(redis-server, gateway processes or in-process gateways, HTTP origins), bounded in time. "
        "Each fails when its protection is removed (checked by hand for the breaker: "
        "without it, requests answered in the last second of a Redis hang drop from hundreds to single digits).",
        "",
        "| fault | test | result | protection |",
        "|---|---|---|---|",
    ]
    for name, test, how in PROTECTIONS:
        lines.append(f"| {name} | `{test}` | {results.get(test, 'not run')} | {how} |")
    if os.path.exists(CAMPAIGN_JSON):
        with open(CAMPAIGN_JSON) as f:
            camp = json.load(f)
        per = ", ".join(f"{k}: {v}" for k, v in sorted(camp["violations"].items()))
        faults = sum(camp["faults"].values())
        lines.append(
            f"| Fault campaign: gateway paused / killed, Redis restarted, pub/sub killed, origin slow / 5xx | "
            f"`stampede-bench campaign --profile {camp['profile']} --seed {camp['seed']}` | "
            f"{camp['total_violations']} violations ({per}) in {faults} faults | "
            "Workload + seeded fault schedule + recorded history + checker (monotonic cache reads, no invalidation "
            "undone, one rebuild per key, bounded staleness, documented errors only); "
            "see [Fault campaign](#fault-campaign). |")
    lines += ["", "## Figures", ""]
    for fig in figures:
        lines.append(f"### {fig['test']}")
        lines.append("")
        lines.append("| figure | value |")
        lines.append("|---|---|")
        for k, v in fig["figures"].items():
            lines.append(f"| {k.replace('_', ' ')} | {v} |")
        lines.append("")
    if soak:
        lines += ["## Soak", "", f"From `{soak.get('command', 'stampede-bench soak')}`:", "",
                  "| figure | value |", "|---|---|"]
        for k, v in soak.get("figures", soak).items():
            if not isinstance(v, (dict, list)):
                lines.append(f"| {k.replace('_', ' ')} | {v} |")
        lines.append("")
    lines += [
        "## Also covered by the test suite",
        "",
        "* Envelope decoder under 50,000 mutated and random inputs, key derivation on 50,000 random targets "
        "(`stampede-layer/src/entry.rs`, `key.rs`): no panic, corrupt entries read as misses and are counted "
        "(`stampede_store_errors_total{op=\"decode\"}`).",
        "* HTTP semantics: `Authorization`/`Cookie` requests bypass, `Set-Cookie`/`private`/`no-store` responses "
        "are not stored, `HEAD` is served from a cached `GET` (`gateway/tests/proxy.rs`).",
        "",
    ]
    text = "\n".join(lines)
    # Keep the campaign section (written by `stampede-bench campaign render`).
    try:
        with open(args.out) as f:
            old = f.read()
    except OSError:
        old = ""
    a, b = old.find(CAMPAIGN_START), old.find(CAMPAIGN_END)
    if a >= 0 and b > a:
        section = old[a : b + len(CAMPAIGN_END)] + "\n\n"
        anchor = text.find("## Also covered by the test suite")
        text = text[:anchor] + section + text[anchor:] if anchor >= 0 else text + "\n" + section
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
