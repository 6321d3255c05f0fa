//! The depot's log lines (issue 20, "`--log-format json` and colour only on
//! a terminal"): plain text without ANSI escapes when stderr is a file, one
//! JSON object per line with `--log-format json` (or IBP_LOG_FORMAT=json).

mod common;

use std::time::Duration;

use common::DepotBuilder;

/// The depot's stderr after it served and stopped.
fn stderr_of(b: DepotBuilder) -> String {
    let mut d = b.spawn();
    // A request it logs: a malformed line.
    {
        let mut c = d.connect();
        let reply = c.request("garbage that is no request\n");
        assert!(reply.starts_with(' '), "an IBP error reply: {reply:?}");
    }
    d.sigterm();
    d.wait_exit(Duration::from_secs(20));
    d.stderr()
}

#[test]
fn text_logs_in_a_file_have_no_colour_codes() {
    let text = stderr_of(DepotBuilder::new());
    assert!(text.contains("depot serving"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file: {text:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    for b in [
        DepotBuilder::new().args(["--log-format", "json"]),
        DepotBuilder::new().env("IBP_LOG_FORMAT", "json"),
    ] {
        let text = stderr_of(b);
        let mut messages = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{text}"));
            assert!(v["timestamp"].is_string(), "{line}");
            assert!(v["level"].is_string(), "{line}");
            assert!(v["target"].is_string(), "{line}");
            messages.push(v["fields"]["message"].as_str().unwrap_or("").to_owned());
        }
        assert!(
            messages.iter().any(|m| m == "depot serving"),
            "{messages:?}"
        );
    }
}
