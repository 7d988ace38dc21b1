//! `canopy plugin test`: a plugin on the sample of every event type, each answer compared with
//! the expected one its author keeps beside the plugin, with a diff where they differ.
//!
//! A plugin project holds, under its test directory (`tests/` by default):
//!
//! - `settings.json` — the integration's settings the plugin is tested with (`{}` when
//!   absent); `validate-config` must accept them, with every secret the plugin declares set;
//! - `expected/<event type>.json` — what `transform` answers for that event type's sample,
//!   in the reviewable form of [`review`]: the requests (secrets as `{{secret:name}}`, bodies
//!   parsed when they are JSON), or the refusal (`{"refused": "skip", "reason": "…"}`).
//!
//! `--bless` writes every expected file from what the plugin answers now; the author reviews
//! the result (in version control) before keeping it. The bundled destinations' golden files
//! (`host/tests/golden/`) are in the same form and checked by the same function.

use std::path::{Path, PathBuf};

use canopy_events::EventKind;
use serde_json::{Value, json};
use similar::TextDiff;

use crate::runtime::{Plugin, PluginConfig, PluginRequest, Refusal, Scope};

/// What `transform` answered, as the document an author reviews and keeps.
pub fn review(answer: &Result<Vec<PluginRequest>, Refusal>) -> String {
    let document = match answer {
        Ok(requests) => Value::Array(
            requests
                .iter()
                .map(|r| {
                    json!({
                        "method": r.method.as_str(),
                        "url": r.url,
                        "headers": r.headers.iter()
                            .map(|h| format!("{}: {}", h.name, h.redacted_value()))
                            .collect::<Vec<_>>(),
                        "signatures": r.signatures,
                        "body": serde_json::from_slice::<Value>(&r.body)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned())),
                    })
                })
                .collect(),
        ),
        Err(refusal) => {
            let (kind, reason) = match refusal {
                Refusal::Skip(r) => ("skip", r),
                Refusal::InvalidConfig(r) => ("invalid_config", r),
                Refusal::InvalidEvent(r) => ("invalid_event", r),
            };
            json!({"refused": kind, "reason": reason})
        }
    };
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}

/// The expected file of one event type under `expected_dir`.
pub fn expected_file(expected_dir: &Path, kind: EventKind) -> PathBuf {
    expected_dir.join(format!("{}.json", kind.key()))
}

/// How one event type's answer compared.
#[derive(Debug, PartialEq, Eq)]
pub enum Comparison {
    Matches,
    /// The expected file and what the plugin answered, as a unified diff.
    Differs(String),
    /// No expected file yet.
    Missing,
    /// `--bless` wrote it.
    Written,
}

/// The outcome of a whole test run.
#[derive(Debug)]
pub struct Report {
    pub plugin: String,
    pub results: Vec<(EventKind, Comparison)>,
    /// Expected files (names) for event types the plugin does not take.
    pub stale: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.results
            .iter()
            .all(|(_, c)| matches!(c, Comparison::Matches | Comparison::Written))
            && self.stale.is_empty()
    }

    /// What the command prints: one line per event type, then every diff and a summary.
    pub fn text(&self) -> String {
        format!("{}\n{}\n", self.details(), self.summary())
    }

    /// One line per event type (and per stale file), then every diff.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for (kind, comparison) in &self.results {
            let status = match comparison {
                Comparison::Matches => "ok",
                Comparison::Differs(_) => "DIFFERS",
                Comparison::Missing => "MISSING (run with --bless to write it)",
                Comparison::Written => "written",
            };
            out.push_str(&format!("{:<28} {status}\n", kind.key()));
        }
        for file in &self.stale {
            out.push_str(&format!(
                "{file:<28} STALE (no event type the plugin takes; remove it)\n"
            ));
        }
        for (kind, comparison) in &self.results {
            if let Comparison::Differs(diff) = comparison {
                out.push_str(&format!(
                    "\n{} (- expected, + answered):\n{diff}",
                    kind.key()
                ));
            }
        }
        out
    }

    /// One line: how many event types matched, differed, were missing or written.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Comparison) -> bool| self.results.iter().filter(|(_, c)| f(c)).count();
        let mut line = format!(
            "{}: {} event types, {} match, {} differ, {} missing, {} written",
            self.plugin,
            self.results.len(),
            count(|c| *c == Comparison::Matches),
            count(|c| matches!(c, Comparison::Differs(_))),
            count(|c| *c == Comparison::Missing),
            count(|c| *c == Comparison::Written),
        );
        if !self.stale.is_empty() {
            line.push_str(&format!(", {} stale", self.stale.len()));
        }
        line
    }
}

/// Runs `plugin` on the sample of every event type with `config` and compares each answer
/// with its file in `expected_dir` (or writes them all when `bless`). An error is a run that
/// could not happen at all: invalid settings, a plugin call that failed, an unwritable file.
pub fn run(
    plugin: &Plugin,
    config: &PluginConfig,
    expected_dir: &Path,
    bless: bool,
) -> Result<Report, String> {
    let problems = plugin
        .validate_config(Scope::Fresh, config)
        .map_err(|e| format!("validate-config failed: {e}"))?
        .value;
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}: {}", p.field, p.message))
            .collect();
        return Err(format!(
            "the test settings are not valid for {}:\n{}",
            plugin.id(),
            lines.join("\n")
        ));
    }
    if bless {
        std::fs::create_dir_all(expected_dir)
            .map_err(|e| format!("cannot create {}: {e}", expected_dir.display()))?;
    }
    // The event types the plugin takes: the server sends it no other.
    let takes = |kind: EventKind| {
        let events = &plugin.info().events;
        events.iter().any(|e| e == "*" || e == kind.key())
    };
    let mut results = Vec::new();
    for &kind in EventKind::ALL.iter().filter(|k| takes(**k)) {
        let answer = plugin
            .transform(Scope::Fresh, kind.sample_json(), config)
            .map_err(|e| format!("transform failed on the {} sample: {e}", kind.key()))?
            .value;
        let answered = review(&answer);
        let file = expected_file(expected_dir, kind);
        let comparison = if bless {
            std::fs::write(&file, &answered)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            Comparison::Written
        } else {
            // A checkout may have turned the file's line ends into CRLF.
            match std::fs::read_to_string(&file).map(|text| text.replace("\r\n", "\n")) {
                Ok(expected) if expected == answered => Comparison::Matches,
                Ok(expected) => Comparison::Differs(
                    TextDiff::from_lines(&expected, &answered)
                        .unified_diff()
                        .context_radius(3)
                        .header("expected", "answered")
                        .to_string(),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Comparison::Missing,
                Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
            }
        };
        results.push((kind, comparison));
    }
    let mut stale = Vec::new();
    if let Ok(entries) = std::fs::read_dir(expected_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let taken = name
                .strip_suffix(".json")
                .and_then(|key| key.parse::<EventKind>().ok())
                .is_some_and(takes);
            if !taken {
                stale.push(name);
            }
        }
    }
    stale.sort();
    Ok(Report {
        plugin: format!("{} {}", plugin.id(), plugin.info().version),
        results,
        stale,
    })
}
