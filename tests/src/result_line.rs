//! The rig's machine-readable console lines:
//!
//! ```text
//! RIG-RESULT scenario=<name> status=PASS|FAIL [reason=<word>] [k=v ...]
//! RIG-DATA scenario=<name> k=v ...
//! ```
//!
//! One line, space-separated `key=value` pairs, values without spaces. Console lines may carry a
//! trailing `\r` (serial). A line must start with the tag to count, so output relayed from an
//! inner guest (prefixed by the L1 scenario) never passes for a result of L1.

use std::collections::BTreeMap;
use std::fmt;

/// `RIG-RESULT` or `RIG-DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// `RIG-RESULT ...`: the scenario's report (one per scenario): PASS when it gathered all its
    /// facts, FAIL when it could not.
    Result,
    /// `RIG-DATA ...`: extra measurements.
    Data,
}

/// Whether a scenario could gather its facts (an L2 program's own verdict for L2's lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `status=PASS`
    Pass,
    /// `status=FAIL`
    Fail,
}

/// One parsed `RIG-RESULT` / `RIG-DATA` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    /// Which tag the line had.
    pub kind: LineKind,
    /// `Some` for `RIG-RESULT` lines, `None` for `RIG-DATA` lines.
    pub status: Option<Status>,
    /// Every `key=value` of the line, including `scenario` (and `status` for results).
    pub fields: BTreeMap<String, String>,
}

/// Why a line that starts with a rig tag is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A word without `=`, or with an empty key.
    #[error("word {0:?} is not key=value")]
    NotKeyValue(String),
    /// A key given twice.
    #[error("key {0:?} repeated")]
    DuplicateKey(String),
    /// No `scenario=`.
    #[error("missing scenario=")]
    MissingScenario,
    /// A RIG-RESULT without `status=PASS|FAIL`.
    #[error("RIG-RESULT needs status=PASS or status=FAIL, got {0:?}")]
    BadStatus(Option<String>),
}

impl ResultLine {
    /// Parses one console line. `None` if it is not a rig line at all (no leading tag);
    /// `Some(Err)` if it has the tag but breaks the grammar.
    pub fn parse(line: &str) -> Option<Result<ResultLine, ParseError>> {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let kind = match words.next()? {
            "RIG-RESULT" => LineKind::Result,
            "RIG-DATA" => LineKind::Data,
            _ => return None,
        };
        Some(Self::parse_fields(kind, words))
    }

    fn parse_fields<'a>(
        kind: LineKind,
        words: impl Iterator<Item = &'a str>,
    ) -> Result<ResultLine, ParseError> {
        let mut fields = BTreeMap::new();
        for word in words {
            let (k, v) = word
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ParseError::NotKeyValue(word.to_string()))?;
            if fields.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ParseError::DuplicateKey(k.to_string()));
            }
        }
        if !fields.contains_key("scenario") {
            return Err(ParseError::MissingScenario);
        }
        let status = match kind {
            LineKind::Data => None,
            LineKind::Result => match fields.get("status").map(String::as_str) {
                Some("PASS") => Some(Status::Pass),
                Some("FAIL") => Some(Status::Fail),
                other => return Err(ParseError::BadStatus(other.map(str::to_string))),
            },
        };
        Ok(ResultLine {
            kind,
            status,
            fields,
        })
    }

    /// The `scenario=` value.
    pub fn scenario(&self) -> &str {
        self.get("scenario").unwrap_or_default()
    }

    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A field parsed as a number (or anything `FromStr`); `None` if absent or unparsable.
    pub fn parse_field<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.parse().ok()
    }

    /// True for a `RIG-RESULT ... status=PASS` line.
    pub fn is_pass(&self) -> bool {
        self.status == Some(Status::Pass)
    }

    /// The `reason=` value of a failure, if given.
    pub fn reason(&self) -> Option<&str> {
        self.get("reason")
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            LineKind::Result => "RIG-RESULT",
            LineKind::Data => "RIG-DATA",
        })?;
        write!(f, " scenario={}", self.scenario())?;
        if let Some(status) = self.get("status") {
            write!(f, " status={status}")?;
        }
        for (k, v) in &self.fields {
            if k != "scenario" && k != "status" {
                write!(f, " {k}={v}")?;
            }
        }
        Ok(())
    }
}

/// All well-formed rig lines of `text` in order; malformed rig lines are returned separately
/// as `(line, error)` so a caller can report them.
pub fn parse_lines(text: &str) -> (Vec<ResultLine>, Vec<(String, ParseError)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        match ResultLine::parse(line) {
            None => {}
            Some(Ok(l)) => good.push(l),
            Some(Err(e)) => bad.push((line.trim_end().to_string(), e)),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pass_result_with_fields() {
        let l = ResultLine::parse(
            "RIG-RESULT scenario=boot status=PASS marker=1 vmm_exit=0 l2_boot_s=8.91\r",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.kind, LineKind::Result);
        assert_eq!(l.status, Some(Status::Pass));
        assert!(l.is_pass());
        assert_eq!(l.scenario(), "boot");
        assert_eq!(l.get("vmm_exit"), Some("0"));
        assert_eq!(l.parse_field::<f64>("l2_boot_s"), Some(8.91));
        assert_eq!(l.get("absent"), None);
    }

    #[test]
    fn parses_a_fail_result_with_reason() {
        let l = ResultLine::parse("RIG-RESULT scenario=boot status=FAIL reason=no-marker")
            .unwrap()
            .unwrap();
        assert_eq!(l.status, Some(Status::Fail));
        assert!(!l.is_pass());
        assert_eq!(l.reason(), Some("no-marker"));
    }

    #[test]
    fn parses_data_lines_without_status() {
        let l = ResultLine::parse("RIG-DATA scenario=l1-smoke bar2=0xfd000000 empty=")
            .unwrap()
            .unwrap();
        assert_eq!(l.kind, LineKind::Data);
        assert_eq!(l.status, None);
        assert_eq!(l.get("empty"), Some(""));
        assert_eq!(l.get("bar2"), Some("0xfd000000"));
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let l = ResultLine::parse("RIG-DATA scenario=x cmd=a=b")
            .unwrap()
            .unwrap();
        assert_eq!(l.get("cmd"), Some("a=b"));
    }

    #[test]
    fn ignores_other_lines_and_prefixed_tags() {
        assert!(ResultLine::parse("rig: modules loaded").is_none());
        assert!(ResultLine::parse("").is_none());
        assert!(ResultLine::parse("L2| 6.15 RIG-RESULT scenario=x status=PASS").is_none());
        assert!(ResultLine::parse("RIG-RESULTS scenario=x status=PASS").is_none());
    }

    #[test]
    fn rejects_malformed_rig_lines() {
        assert_eq!(
            ResultLine::parse("RIG-RESULT scenario=x status=MAYBE").unwrap(),
            Err(ParseError::BadStatus(Some("MAYBE".into())))
        );
        assert_eq!(
            ResultLine::parse("RIG-RESULT scenario=x").unwrap(),
            Err(ParseError::BadStatus(None))
        );
        assert_eq!(
            ResultLine::parse("RIG-RESULT status=PASS").unwrap(),
            Err(ParseError::MissingScenario)
        );
        assert_eq!(
            ResultLine::parse("RIG-DATA scenario=x word").unwrap(),
            Err(ParseError::NotKeyValue("word".into()))
        );
        assert_eq!(
            ResultLine::parse("RIG-DATA scenario=x =v").unwrap(),
            Err(ParseError::NotKeyValue("=v".into()))
        );
        assert_eq!(
            ResultLine::parse("RIG-DATA scenario=x a=1 a=2").unwrap(),
            Err(ParseError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn display_round_trips() {
        let text = "RIG-RESULT scenario=boot status=PASS a=1 b=x";
        let l = ResultLine::parse(text).unwrap().unwrap();
        assert_eq!(l.to_string(), text);
        assert_eq!(ResultLine::parse(&l.to_string()).unwrap().unwrap(), l);
    }

    #[test]
    fn parse_lines_splits_good_and_bad() {
        let log = "boot noise\r\nRIG-DATA scenario=a k=1\r\nRIG-RESULT scenario=a status=??\r\n\
                   RIG-RESULT scenario=a status=PASS\r\n";
        let (good, bad) = parse_lines(log);
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].kind, LineKind::Data);
        assert!(good[1].is_pass());
        assert_eq!(bad.len(), 1);
        assert!(bad[0].0.contains("status=??"));
    }
}
