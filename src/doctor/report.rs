//! The doctor's report and its two renderings: text for people, JSON for scripts.
//!
//! JSON (documented in the README, "bastion doctor"):
//! `{ "ok": bool, "checks": [ { "name", "status", "finding", "fix", …check-specific… } ] }`.
//! `ok` is false exactly when a check has status `fail`.

use std::io::{self, Write};

use serde::Serialize;

use super::{CheckResult, Status};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(checks: Vec<CheckResult>) -> Self {
        let ok = !checks.iter().any(|c| c.status == Status::Fail);
        Report { ok, checks }
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The check named `name`, if any.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn to_json(&self) -> serde_json::Value {
        // Cannot fail: every field is a string, bool, enum or JSON value already.
        serde_json::to_value(self).expect("report serializes")
    }

    /// Pretty JSON, one document, trailing newline.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    /// One line per check (`STATUS name`), then its finding and fix indented, then a summary.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        for check in &self.checks {
            let status = match check.status {
                Status::Fail => "FAIL",
                Status::Warn => "WARN",
                other => other.as_str(),
            };
            writeln!(out, "{status:<5} {}", check.name)?;
            writeln!(out, "      {}", check.finding)?;
            if let Some(fix) = &check.fix {
                writeln!(out, "      fix: {fix}")?;
            }
        }
        let (fail, warn) = (self.count(Status::Fail), self.count(Status::Warn));
        writeln!(
            out,
            "\n{} checks: {} ok, {warn} warn, {fail} fail, {} skipped",
            self.checks.len(),
            self.count(Status::Ok),
            self.count(Status::Skip)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report::new(vec![
            CheckResult::ok("credentials", "provider `env` answered").with("provider", "env"),
            CheckResult::fail("database:db:tcp", "refused", "start it").with("error", "refused"),
        ])
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = sample().to_json();
        assert_eq!(v["ok"], false);
        let c = &v["checks"][0];
        assert_eq!(c["name"], "credentials");
        assert_eq!(c["status"], "ok");
        assert_eq!(c["fix"], serde_json::Value::Null);
        assert_eq!(c["provider"], "env");
        assert_eq!(v["checks"][1]["status"], "fail");
        assert_eq!(v["checks"][1]["fix"], "start it");
    }

    #[test]
    fn text_is_one_line_per_check_then_indented() {
        let mut out = Vec::new();
        sample().write_text(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("ok    credentials\n      provider `env` answered\n"),
            "{text}"
        );
        assert!(text.contains("FAIL  database:db:tcp\n      refused\n      fix: start it\n"));
        assert!(text.contains("2 checks: 1 ok, 0 warn, 1 fail, 0 skipped"));
    }
}
