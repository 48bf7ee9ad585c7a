//! Thresholds (`--fail-if 'p99_deliver_ms>50'`): parsed once, evaluated against the run's
//! final metrics. A threshold whose condition holds is *breached*; any breach makes the run
//! exit with code 99 (after the reports are written), as k6 does.
//!
//! A threshold on a metric that has no value (no samples, e.g. `p99_deliver_ms` in a run
//! without deliveries) counts as breached: a gate that silently passes on missing data cannot
//! be trusted.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Latency metrics: `{p50,p90,p99,p999,max}_{connect,ack,deliver}_ms`.
pub const LATENCY_STATS: &[&str] = &["p50", "p90", "p99", "p999", "max"];
pub const LATENCY_KINDS: &[&str] = &["connect", "ack", "deliver"];
/// Every other metric a threshold may name.
pub const SCALAR_METRICS: &[&str] = &[
    "sent_per_sec",
    "acked_per_sec",
    "delivered_per_sec",
    "connects_per_sec",
    "errors",
    "lost",
    "duplicated",
    "reordered",
    "gaps",
    "undelivered",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    #[error("`{0}` is not METRIC OP NUMBER (e.g. p99_deliver_ms>50); OP is one of < <= > >= == !=")]
    Syntax(String),
    #[error("`{metric}` is not a known metric; known: {known}")]
    UnknownMetric { metric: String, known: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// `metric op value`: the run fails when this condition is true.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.metric, self.op.symbol(), self.value)
    }
}

/// Whether `name` is a metric thresholds can use.
pub fn is_known_metric(name: &str) -> bool {
    if SCALAR_METRICS.contains(&name) {
        return true;
    }
    let Some(rest) = name.strip_suffix("_ms") else {
        return false;
    };
    rest.split_once('_')
        .is_some_and(|(stat, kind)| LATENCY_STATS.contains(&stat) && LATENCY_KINDS.contains(&kind))
}

fn known_list() -> String {
    let mut names: Vec<String> = Vec::new();
    for kind in LATENCY_KINDS {
        names.push(format!("{{{}}}_{kind}_ms", LATENCY_STATS.join(",")));
    }
    names.extend(SCALAR_METRICS.iter().map(|s| (*s).to_owned()));
    names.join(", ")
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(text: &str) -> Result<Self, ThresholdError> {
        let syntax = || ThresholdError::Syntax(text.to_owned());
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let start = compact.find(['<', '>', '=', '!']).ok_or_else(syntax)?;
        let (metric, rest) = compact.split_at(start);
        let (op, number) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|n| (*op, n)))
        .ok_or_else(syntax)?;
        let value: f64 = number.parse().map_err(|_| syntax())?;
        if metric.is_empty() || !value.is_finite() {
            return Err(syntax());
        }
        if !is_known_metric(metric) {
            return Err(ThresholdError::UnknownMetric {
                metric: metric.to_owned(),
                known: known_list(),
            });
        }
        Ok(Threshold {
            metric: metric.to_owned(),
            op,
            value,
        })
    }
}

/// A threshold and what the run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub threshold: String,
    pub metric: String,
    /// The measured value; `None` when the run has no data for it.
    pub actual: Option<f64>,
    pub breached: bool,
}

impl Threshold {
    /// Evaluate against `lookup(metric)`. Missing data is a breach.
    pub fn evaluate(&self, lookup: impl Fn(&str) -> Option<f64>) -> Outcome {
        let actual = lookup(&self.metric);
        let breached = actual.is_none_or(|v| self.op.holds(v, self.value));
        Outcome {
            threshold: self.to_string(),
            metric: self.metric.clone(),
            actual,
            breached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Threshold {
        text.parse().expect(text)
    }

    #[test]
    fn thresholds_parse_with_any_spacing() {
        assert_eq!(
            t("p99_deliver_ms>50"),
            Threshold {
                metric: "p99_deliver_ms".into(),
                op: Op::Gt,
                value: 50.0
            }
        );
        assert_eq!(t(" sent_per_sec < 1e3 ").op, Op::Lt);
        assert_eq!(t("errors>=1").op, Op::Ge);
        assert_eq!(t("lost != 0").op, Op::Ne);
        assert_eq!(t("p999_connect_ms<=2.5").value, 2.5);
        assert_eq!(t("max_ack_ms==0").op, Op::Eq);
    }

    #[test]
    fn malformed_and_unknown_thresholds_are_rejected() {
        for bad in [
            "p99_deliver_ms",
            ">5",
            "p99_deliver_ms>",
            "p99_deliver_ms>fast",
            "p99_deliver_ms=>5",
        ] {
            assert!(
                matches!(bad.parse::<Threshold>(), Err(ThresholdError::Syntax(_))),
                "{bad}"
            );
        }
        let err = "p98_deliver_ms>5".parse::<Threshold>().expect_err("unknown");
        assert!(matches!(err, ThresholdError::UnknownMetric { .. }));
        assert!(err.to_string().contains("p999"));
    }

    #[test]
    fn evaluation_breaches_when_the_condition_holds_or_data_is_missing() {
        let lookup = |m: &str| match m {
            "p99_deliver_ms" => Some(42.0),
            "errors" => Some(0.0),
            _ => None,
        };
        assert!(!t("p99_deliver_ms>50").evaluate(lookup).breached);
        assert!(t("p99_deliver_ms>40").evaluate(lookup).breached);
        assert!(!t("errors>0").evaluate(lookup).breached);
        let missing = t("p99_ack_ms>50").evaluate(lookup);
        assert!(missing.breached);
        assert_eq!(missing.actual, None);
    }
}
