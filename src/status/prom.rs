//! Reads the Prometheus text format pgch itself serves, so `pgch status` can show a
//! running pgch's figures without a second endpoint: only what `/metrics` writes
//! (`name{label="value",…} number` lines, `#` comments) needs to be understood.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of `text`; lines it cannot read are skipped (a newer pgch may add forms).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}')?;
            (line.get(..close + 1)?, line.get(close + 1..)?)
        }
        None => line.split_at(line.find(char::is_whitespace)?),
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.find('{') {
        Some(open) => (
            series.get(..open)?,
            parse_labels(series.get(open + 1..series.len() - 1)?)?,
        ),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → map; `None` on a malformed list.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_string(), value);
    }
}

/// The value of `name` whose labels include every pair of `with`.
pub fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_labelled_samples_and_skips_comments() {
        let text = "# HELP pgch_ready x\n# TYPE pgch_ready gauge\npgch_ready 1\n\
                    pgch_phase{phase=\"streaming\"} 1\n\
                    pgch_snapshot_copied_rows{table=\"a \\\"q\\\" b\",x=\"1\"} 42\n\
                    pgch_lag_seconds 0.25\nbroken{ 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(value(&samples, "pgch_ready", &[]), Some(1.0));
        assert_eq!(
            value(&samples, "pgch_phase", &[("phase", "streaming")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &samples,
                "pgch_snapshot_copied_rows",
                &[("table", "a \"q\" b")]
            ),
            Some(42.0)
        );
        assert_eq!(value(&samples, "pgch_lag_seconds", &[]), Some(0.25));
        assert_eq!(
            value(&samples, "pgch_phase", &[("phase", "stopping")]),
            None
        );
    }
}
