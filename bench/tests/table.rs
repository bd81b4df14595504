//! The table of experiments and the peers' configs, black-box.

use std::path::Path;
use std::time::Duration;

use stampede_bench::cache_status::classify;
use stampede_bench::ladder::peers::{
    NGINX_HIT, NGINX_REAL, VARIANTS, VARNISH, VARNISH_REAL, Variant, conf_duration,
};
use stampede_bench::ladder::table::{
    Col, HIT_PATH, HIT_PINNING, Part, RunSpec, Section, TABLE_ROWS, Target, counters, rung_names,
    sections,
};
use stampede_bench::ladder::{LadderOptions, Profile};

fn opts(profile: Profile) -> LadderOptions {
    LadderOptions {
        rungs: profile.rungs(),
        ..LadderOptions::of(profile)
    }
}

/// Rows that share a run id share its whole setup (the runner runs it once).
#[test]
fn one_id_one_setup() {
    let all = sections(&opts(Profile::Full));
    let rows: Vec<&RunSpec> = all.iter().flat_map(Section::rows).collect();
    let key = |s: &RunSpec| {
        format!(
            "{:?}{}{:?}{:?}{:?}{:?}{:?}",
            s.front, s.instances, s.origin, s.ttl, s.load, s.measure, s.prewarm
        )
    };
    for a in &rows {
        for b in rows.iter().filter(|b| b.id == a.id) {
            assert_eq!(key(a), key(b), "{}", a.id);
        }
    }
}

/// Every rung has a report section with a heading and a table, and every
/// counter column names a scraped counter.
#[test]
fn every_rung_has_a_report_section() {
    let names = [
        "table",
        "scope",
        "multi-key",
        "negative",
        "xfetch",
        "fencing",
        "metastable",
        "peers",
        "revalidation",
        "slow-origin",
        "hit-path",
        "real-traffic",
    ];
    assert_eq!(rung_names(), names);
    for s in sections(&opts(Profile::Full))
        .iter()
        .filter(|s| !s.rung.is_empty())
    {
        assert!(!s.heading.is_empty() && s.rows().count() > 0, "{}", s.rung);
        for p in &s.parts {
            if let Part::Table(_, cols, _) = p {
                for c in cols {
                    assert!(!c.head().is_empty());
                    if let Col::Counter(name) = c {
                        assert!(counters().iter().any(|k| k.0 == *name), "{name}");
                    }
                }
            }
        }
    }
}

fn intro(all: &[Section], rung: &str) -> String {
    let s = all.iter().find(|s| s.rung == rung).unwrap();
    let table = s.parts.iter().find_map(|p| {
        if let Part::Table(t, ..) = p {
            Some(t.clone())
        } else {
            None
        }
    });
    table.unwrap()
}

/// The prose takes its numbers from the table's settings.
#[test]
fn prose_follows_the_table() {
    let mut o = opts(Profile::Full);
    (o.ttl, o.instances, o.duration) = (Duration::from_millis(1500), 5, Duration::from_secs(7));
    let all = sections(&o);
    assert!(all[0].heading.contains("(5 gateways"));
    let peers = intro(&all, "peers");
    assert!(
        peers.contains("50 clients, 95 % hot key, 7s, TTL 1s 500ms"),
        "{peers}"
    );
    assert!(intro(&all, "fencing").contains("--lock-ttl 300ms"));
    assert_eq!(Col::LastMs.head(), "last 5 s");
    let meta = intro(&all, "metastable");
    assert!(
        meta.contains("≤ 300 ms") && meta.contains("400 clients"),
        "{meta}"
    );
    assert!(intro(&all, "multi-key").contains("more than 80 origin queries"));
}

fn rows(rung: &str) -> Vec<RunSpec> {
    let all = sections(&opts(Profile::Full));
    let s = all.iter().find(|s| s.rung == rung).unwrap();
    s.rows().cloned().collect()
}

/// Issue 10: the full stack on the fleet, an origin with a short freshness,
/// validators off and on.
#[test]
fn revalidation_rows() {
    let [off, on] = <[RunSpec; 2]>::try_from(rows("revalidation")).unwrap();
    assert_eq!((off.instances, on.instances), (3, 3));
    let flags = |s: &RunSpec| s.origin.flags.join(" ");
    assert_eq!(
        (flags(&off), flags(&on)),
        (
            "--cache-control max-age=2".into(),
            "--cache-control max-age=2 --validators".into()
        )
    );
}

/// Issue 11: a 3 s origin behind a 2 s lock on the fleet, renewal on and off, short.
#[test]
fn slow_origin_rows() {
    let [renew, none] = <[RunSpec; 2]>::try_from(rows("slow-origin")).unwrap();
    assert_eq!((renew.origin.latency_ms, renew.instances), (3000, 3));
    assert!(renew.gateway_flags().join(" ").contains("--lock-ttl 2s"));
    assert!(none.gateway_flags().contains(&"--no-lock-renewal".into()));
    assert!(renew.load[0].duration <= Duration::from_secs(15));
    let mut o = opts(Profile::Full);
    (o.instances, o.duration) = (5, Duration::from_secs(7));
    assert!(intro(&sections(&o), "slow-origin").contains("for 7s on 5 gateways"));
}

/// Issues 12 and 22: in-process store, Redis store with and without its
/// near cache, nginx and the floor (the gateway's admin `/healthz`)
/// alternated, 3 rounds, 50 clients on one hot key, the server on one core
/// and the load generator on the other.
#[test]
fn hit_path_rows() {
    let hits = rows("hit-path");
    let ids: Vec<&str> = hits.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        &ids[..6],
        [
            "hit-memory-1",
            "hit-redis-1",
            "hit-redis-no-near-1",
            "hit-nginx-1",
            "hit-floor-1",
            "hit-memory-2"
        ]
    );
    assert_eq!(hits.len(), 15);
    assert!(
        hits.iter()
            .all(|r| r.load[0].hot_fraction == 1.0 && r.load[0].concurrency == 50)
    );
    assert!(hits.iter().all(|r| r.pinning == Some(HIT_PINNING)));
    assert_ne!(HIT_PINNING.server_cpu, HIT_PINNING.load_cpu);
    assert!(hits[1].needs_redis() && hits[2].needs_redis() && !hits[0].needs_redis());
    assert_eq!(hits[4].target, Target::Healthz);
    assert!(hits[..4].iter().all(|r| r.target == Target::Front));
    // The near cache is the default; the comparison row turns it off.
    let near_flag = |r: &RunSpec| r.gateway_flags().iter().any(|f| f == "--near-cache-ttl");
    assert!(!near_flag(&hits[1]) && near_flag(&hits[2]));
    let mut o = opts(Profile::Full);
    o.duration = Duration::from_secs(7);
    let hit = HIT_PATH.intro_text(&o, true, NGINX_HIT.workers);
    assert!(
        hit.contains("1s of warm-up, then 3s 500ms measured")
            && hit.contains("3 rounds")
            && hit.contains("on CPU 0")
            && hit.contains("`TOKIO_WORKER_THREADS=1`")
            && hit.contains("1 worker process"),
        "{hit}"
    );
    assert!(config(&NGINX_HIT, "/d").contains("worker_processes 1;"));
}

#[test]
fn profiles_select_rows_and_rungs() {
    assert_eq!(Profile::Quick.rungs(), ["table"]);
    assert_eq!(Profile::Full.rungs(), rung_names());
    assert_eq!(Profile::Full.rows().len(), TABLE_ROWS.len());
    let quick = Profile::Quick.rows();
    assert!(quick.contains(&"naive".into()) && quick.contains(&"full".into()));
    assert_eq!(
        sections(&opts(Profile::Quick))[0].rows().count(),
        2 * quick.len()
    );
    assert!(Profile::Quick.duration() < Profile::Full.duration());
}

fn config(v: &Variant, dir: &str) -> String {
    v.fill(
        v.kind.template,
        Path::new(dir),
        (1, 2),
        Duration::from_secs(2),
    )
}

#[test]
fn durations_render_for_nginx_and_vcl() {
    assert_eq!(conf_duration(Duration::from_secs(2)), "2s");
    assert_eq!(conf_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(conf_duration(Duration::ZERO), "0s");
}

#[test]
fn configs_have_the_row_settings() {
    let [lock, stale, no_grace, grace] = VARIANTS.map(|v| config(&v, "/d"));
    for want in [
        "listen 127.0.0.1:1;",
        "server 127.0.0.1:2;",
        "proxy_cache_valid 200 2s;",
        "proxy_cache_lock on;",
    ] {
        assert!(lock.contains(want) && stale.contains(want), "{want}");
    }
    assert!(
        lock.contains("# proxy_cache_use_stale")
            && lock.contains("# proxy_cache_background_update")
    );
    assert!(stale.contains("\n            proxy_cache_use_stale updating error timeout;"));
    assert!(stale.contains("\n            proxy_cache_background_update on;"));
    assert!(no_grace.contains(".port = \"2\";") && no_grace.contains("set beresp.ttl = 2s;"));
    assert!(
        no_grace.contains("set beresp.grace = 0s;") && grace.contains("set beresp.grace = 5s;")
    );
    for text in [&lock, &no_grace] {
        for k in [
            "{dir}",
            "{port}",
            "{ttl}",
            "{stale}",
            "{grace}",
            "{workers}",
            "{use_stale}",
        ] {
            assert!(!text.contains(k), "{k} left");
        }
    }
}

/// The real-traffic rung's peers: nginx also serves stale over an origin
/// 503; Varnish keeps its default VCL's TTLs (the origin's) with 10 s grace.
#[test]
fn real_traffic_configs_have_the_issue_settings() {
    let (nginx, varnish) = (config(&NGINX_REAL, "/d"), config(&VARNISH_REAL, "/d"));
    for want in [
        "proxy_cache_lock on;",
        "\n            proxy_cache_use_stale updating error http_503;",
        "\n            proxy_cache_background_update on;",
    ] {
        assert!(nginx.contains(want), "{want}");
    }
    assert!(varnish.contains("set beresp.grace = 10s;") && !varnish.contains("beresp.ttl"));
    for text in [&nginx, &varnish] {
        for k in [
            "{dir}",
            "{port}",
            "{origin_port}",
            "{ttl}",
            "{grace}",
            "{use_stale}",
        ] {
            assert!(!text.contains(k), "{k} left");
        }
    }
    assert_eq!(VARNISH_REAL.file_name(), "varnish-real.vcl");
    assert_eq!(NGINX_REAL.file_name(), "nginx-real.conf");
    assert_eq!(VARNISH_REAL.label(), "Varnish (default VCL, grace 10s)");
}

/// What the report shows names no directory of the machine that ran it.
#[test]
fn shown_config_has_no_machine_paths() {
    let tmp = std::env::temp_dir().display().to_string();
    for v in VARIANTS {
        let shown = config(&v, "<tmp>/peers-x-1");
        assert!(!shown.contains(&tmp) && (shown.contains("<tmp>/peers-x-1") || v.kind == &VARNISH));
    }
}

/// The headers the configs send classify as the bench expects.
#[test]
fn peer_cache_status_values_classify() {
    let all = VARIANTS.map(|v| config(&v, "/d")).concat();
    for (value, hit, stale) in [
        ("nginx; hit", true, false),
        ("nginx; hit; ttl=-1", true, true),
        ("nginx; fwd=stale", false, false),
        ("nginx; fwd=miss", false, false),
        ("varnish; hit", true, false),
        ("varnish; hit; ttl=-1", true, true),
        ("varnish; fwd=miss", false, false),
    ] {
        let c = classify(Some(value));
        assert_eq!((c.hit, c.stale, c.miss), (hit, stale, !hit), "{value}");
        assert!(
            all.contains(&format!("\"{value}\"")),
            "{value} is not in the configs"
        );
    }
}

/// Every `{name}` of the prose (`bench/src/ladder/prose.md`) is filled from
/// the table (the fencing prose's `{id}` is part of a path).
#[test]
fn prose_placeholders_are_filled() {
    for s in sections(&opts(Profile::Full)) {
        for p in &s.parts {
            let (Part::Table(text, ..) | Part::Text(text)) = p else {
                continue;
            };
            let left = text.replace("{id}", "");
            assert!(!left.contains('{'), "{}: {left}", s.rung);
        }
    }
}
