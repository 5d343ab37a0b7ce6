//! The real button of a hardware-in-the-loop run, where it can go wrong, against the real
//! lookupd on a real (small) bundle: a press that never comes fails after the press timeout,
//! saying what to check; a button line lookupd cannot open fails at once, with lookupd's reason.
//! (A press that does come is the whole-system test's, on a rig with a button or gpio-sim.)

use std::process::Command;
use std::time::{Duration, Instant};

use system_tests::binary;
use system_tests::button::Operator;
use system_tests::pipeline::{lookup_session, run_args};

/// `lookupd run` on a fresh test bundle, the replay camera over its catalogue images, stdin and
/// `extra` triggers.
fn lookupd_run(bundle: &test_bundle::TestBundle, extra: &[&str]) -> Command {
    let camera = format!(
        "file://{}?step",
        bundle.root.path().join("images").display()
    );
    let mut flags = vec![
        "--camera",
        &camera,
        "--trigger",
        "stdin",
        "--runtime",
        "cpu",
    ];
    flags.extend(extra);
    let mut command = Command::new(binary("lookupd", "lookupd"));
    command.args(run_args(&bundle.dir_arg(), &flags));
    command.env("LOOKUPD_LOG", "warn");
    command
}

#[test]
fn a_press_that_never_comes_fails_after_the_timeout_saying_what_to_check() {
    let bundle = test_bundle::build_bundle();
    // The button is named but nothing presses it (lookupd watches only stdin, which stays
    // silent): the session must give up after the timeout, not hang.
    let mut button = Operator {
        trigger: "gpio:gpiochip0:17".into(),
        timeout: Duration::from_secs(2),
        hints: vec!["the replay camera shows SKU-0".into()],
    };
    let start = Instant::now();
    let error = lookup_session(lookupd_run(&bundle, &[]), 2, &mut button, |_| {})
        .expect_err("no press came, yet the session succeeded");
    let waited = start.elapsed();
    let message = format!("{error:#}");
    assert!(
        message.contains("no lookup report within 2 s of asking for press 1 on gpio:gpiochip0:17"),
        "{message}"
    );
    assert!(message.contains("LOOKUP_HIL_PRESS_TIMEOUT_S"), "{message}");
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(60),
        "gave up after {waited:?}"
    );
}

#[test]
fn a_button_lookupd_cannot_open_fails_at_once() {
    let bundle = test_bundle::build_bundle();
    let line = "gpio:/nonexistent/gpiochip9:0";
    let mut button = Operator {
        trigger: line.into(),
        timeout: Duration::from_secs(120),
        hints: Vec::new(),
    };
    let start = Instant::now();
    let error = lookup_session(
        lookupd_run(&bundle, &["--trigger", line]),
        1,
        &mut button,
        |_| {},
    )
    .expect_err("the line cannot be opened, yet the session succeeded");
    let message = format!("{error:#}");
    assert!(
        message.contains("lookupd cannot watch the button")
            && message.contains("/nonexistent/gpiochip9"),
        "{message}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}: the press timeout, not lookupd's fault, ended it",
        start.elapsed()
    );
}
