//! Result lines of the rig (grammar in resources/rig/README.md; parsed by the rig-tests crate,
//! tests/src/result_line.rs):
//!
//! ```text
//! RIG-DATA scenario=<name> k=v ...
//! RIG-RESULT scenario=<name> status=PASS|FAIL [reason=<word>] [k=v ...]
//! ```
//!
//! Values never contain spaces (they are replaced by `_`). Lines go to stdout, which is L2's serial console.

use std::io::Write;
use std::process::ExitCode;

/// Formats one result line. `status` is `None` for a RIG-DATA line.
pub fn format_line(scenario: &str, status: Option<bool>, fields: &[(&str, String)]) -> String {
    let mut line = match status {
        None => format!("RIG-DATA scenario={}", clean(scenario)),
        Some(pass) => format!(
            "RIG-RESULT scenario={} status={}",
            clean(scenario),
            if pass { "PASS" } else { "FAIL" }
        ),
    };
    for (k, v) in fields {
        line.push(' ');
        line.push_str(&clean(k));
        line.push('=');
        line.push_str(&clean(v));
    }
    line
}

fn clean(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    if c.is_empty() {
        "-".to_string()
    } else {
        c
    }
}

/// Prints the result lines of one scenario.
#[derive(Debug, Clone)]
pub struct Reporter {
    scenario: String,
}

impl Reporter {
    /// A reporter for `scenario` (the name in every line).
    pub fn new(scenario: &str) -> Self {
        Reporter {
            scenario: scenario.to_string(),
        }
    }

    /// The scenario name.
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// Prints a `RIG-DATA` line.
    pub fn data(&self, fields: &[(&str, String)]) {
        emit(&format_line(&self.scenario, None, fields));
    }

    /// Prints the final `RIG-RESULT` line.
    pub fn result(&self, pass: bool, fields: &[(&str, String)]) {
        emit(&format_line(&self.scenario, Some(pass), fields));
    }

    /// Prints a human-readable progress line (not parsed by the harness).
    pub fn log(&self, msg: &str) {
        emit(&format!("{}: {}", self.scenario, msg));
    }

    /// Turns a program's outcome into its exit status. `Ok(pass)` has printed its own
    /// `RIG-RESULT` line already; an error gets a failing one here, so every run ends
    /// with exactly one result line.
    pub fn finish<E: std::fmt::Display>(&self, outcome: Result<bool, E>) -> ExitCode {
        match outcome {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                self.log(&format!("error: {e}"));
                self.result(
                    false,
                    &[("reason", "error".into()), ("error", e.to_string())],
                );
                ExitCode::FAILURE
            }
        }
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // Console output: nothing useful can be done if it fails.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `0x`-prefixed lower-case hex, the rig's way of printing addresses and words.
pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_result_lines_follow_the_grammar() {
        assert_eq!(
            format_line("bar-pattern", None, &[("bdf", "0000:00:03.0".into())]),
            "RIG-DATA scenario=bar-pattern bdf=0000:00:03.0"
        );
        assert_eq!(
            format_line("x", Some(false), &[("reason", "no device".into())]),
            "RIG-RESULT scenario=x status=FAIL reason=no_device"
        );
        assert_eq!(
            format_line("x", Some(true), &[("k", String::new())]),
            "RIG-RESULT scenario=x status=PASS k=-"
        );
    }
}
