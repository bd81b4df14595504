//! The binary's command line: bad input gets one clear line and a non-zero exit.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("run gateway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_one_clear_error() {
    for (args, needle) in [
        (vec!["--ttl", "soon"], "--ttl"),
        (vec!["--jitter", "2"], "--jitter"),
        (vec!["--origin", "ftp://x"], "only http://"),
        (
            vec!["--origin", "http://x/some/path"],
            "must not have a path",
        ),
        (
            vec!["--mitigations", "single-flight,bogus"],
            "unknown mitigation",
        ),
        (vec!["--redis", "localhost:6379"], "redis://"),
        (vec!["--listen", "nowhere"], "--listen"),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn unreachable_redis_fails_at_start_with_a_clear_message() {
    let port = stampede_layer::testing::free_port().to_string();
    let listen = format!("127.0.0.1:{}", stampede_layer::testing::free_port());
    let admin = format!("127.0.0.1:{}", stampede_layer::testing::free_port());
    let (code, err) = run(&[
        "--redis",
        &format!("redis://127.0.0.1:{port}"),
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
