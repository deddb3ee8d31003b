//! A reader of the Prometheus text format as Envoy's `/stats/prometheus` writes it: one
//! sample per line, `name{label="value",...} number`, `#` lines skipped, label values with
//! the format's escapes (`\\`, `\"`, `\n`).

use std::fmt;

/// One sample: a metric name, its labels in order, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`eisodos_requests_total`).
    pub name: String,
    /// Label names and values, unescaped, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(n, v)| format!("{n}={v:?}"))
            .collect();
        write!(f, "{}{{{}}} {}", self.name, labels.join(","), self.value)
    }
}

/// A whole scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in the order written.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses a scrape.
    ///
    /// # Errors
    /// The first line that is not a sample, with its number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let samples = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|(number, line)| {
                parse_line(line).map_err(|err| format!("line {}: {err}: {line}", number + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { samples })
    }

    /// The samples of metric `name`.
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the one sample of `name` that has all of `labels` (and maybe others);
    /// `None` when there is none.
    ///
    /// # Panics
    /// When several samples match: the labels given do not name one series.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self
            .family(name)
            .filter(|s| labels.iter().all(|(n, v)| s.label(n) == Some(v)));
        let first = matching.next()?;
        assert!(
            matching.next().is_none(),
            "several series of {name} have {labels:?}"
        );
        Some(first.value)
    }

    /// The sum of every sample of `name` that has all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.family(name)
            .filter(|s| labels.iter().all(|(n, v)| s.label(n) == Some(v)))
            .map(|s| s.value)
            .sum()
    }

    /// The lines of the samples whose name starts with `prefix`, as Prometheus would write
    /// them (for a README or a failure message).
    pub fn lines(&self, prefix: &str) -> String {
        self.samples
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .map(|s| format!("{s}\n"))
            .collect()
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
            let (value, after) = unescape_until_quote(after)?;
            labels.push((label.to_owned(), value));
            rest = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value = rest.trim();
    // A timestamp may follow the value; Envoy writes none.
    let value = value.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().map_err(|e| format!("value {other:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The label value up to its closing quote, unescaped, and what follows the quote.
fn unescape_until_quote(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[at + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                other => return Err(format!("unknown escape {other:?}")),
            },
            c => value.push(c),
        }
    }
    Err("a label value without its closing quote".to_owned())
}

/// Scrapes `envoy`'s `/stats/prometheus` until the samples of `name` add up to `total` (every
/// request a test sent has been flushed into the counter: eisodos adds its counts once a
/// second), and returns that scrape, for the test to check each series exactly.
///
/// # Panics
/// When the sum passes `total` (counted twice), or does not reach it in 10 s.
pub fn scrape_when_total(envoy: &crate::envoy::Envoy, name: &str, total: f64) -> Scrape {
    crate::wait::until(std::time::Duration::from_secs(10), || {
        let scrape = Scrape::parse(&envoy.admin_get("/stats/prometheus"))?;
        let sum = scrape.sum(name, &[]);
        assert!(
            sum <= total,
            "{name} adds up to {sum}, more than the {total} sent"
        );
        if sum == total {
            Ok(scrape)
        } else {
            Err(format!("{name} adds up to {sum}, not yet {total}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_with_escapes_and_values() {
        let text = "# TYPE eisodos_requests_total counter\n\
            eisodos_requests_total{plugin=\"eisodos\",backend=\"outbound|80||svc-a.default.svc.cluster.local\"} 30\n\
            eisodos_mode{plugin=\"a\\\\b\\\"c\\nd\"} 1\n\
            envoy_server_uptime 12\n";
        let scrape = Scrape::parse(text).unwrap();
        assert_eq!(scrape.samples.len(), 3);
        assert_eq!(
            scrape.value(
                "eisodos_requests_total",
                &[("backend", "outbound|80||svc-a.default.svc.cluster.local")]
            ),
            Some(30.0)
        );
        assert_eq!(scrape.samples[1].label("plugin"), Some("a\\b\"c\nd"));
        assert_eq!(scrape.value("envoy_server_uptime", &[]), Some(12.0));
        assert_eq!(scrape.value("eisodos_mode", &[("plugin", "x")]), None);
    }

    #[test]
    fn refuses_what_is_not_a_sample() {
        assert!(Scrape::parse("eisodos_mode{plugin=\"a} 1\n").is_err());
        assert!(Scrape::parse("eisodos_mode 1x\n").is_err());
        assert!(Scrape::parse("eisodos_mode{plugin=\"a\\q\"} 1\n").is_err());
    }
}
