//! A strict reader of the Prometheus text exposition format (0.0.4), for tests that hold
//! `/metrics` to what `promtool check metrics` demands and a little more: every family has
//! `# HELP` and `# TYPE` before its samples, no family appears twice, every line parses, no
//! series repeats, and each histogram's buckets are cumulative and end in a `+Inf` bucket
//! equal to its `_count`, with a `_sum` beside it.
//!
//! [`check`] lists every problem at once so a failing test shows the whole picture.

use std::collections::{BTreeMap, BTreeSet};

/// One metric family as exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    pub help: String,
    /// Sample lines of the family (each bucket, `_sum` and `_count` line counts as one).
    pub samples: usize,
}

/// One sample line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A well-formed exposition: its families by name, and every sample in order.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Sample lines in all: what grows when a new series appears.
    pub fn series_count(&self) -> usize {
        self.samples.len()
    }

    /// Every value label `label` takes in the samples of `family` (its `_bucket`, `_sum` and
    /// `_count` lines included).
    pub fn label_values(&self, family: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| family_of(&s.name, |f| f == family).is_some())
            .flat_map(|s| s.labels.iter())
            .filter(|(name, _)| name == label)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// Parses `text`; `Err` lists every problem found, one per entry, with its line number.
pub fn check(text: &str) -> Result<Exposition, Vec<String>> {
    let mut reader = Reader::default();
    for (index, line) in text.lines().enumerate() {
        reader.line(index + 1, line);
    }
    reader.finish()
}

/// Reads a `/metrics` response: asserts `200 OK`, then holds its body to [`check`], failing
/// the test with every problem and the whole text. Returns the text and what it exposes.
pub async fn read(response: reqwest::Response) -> (String, Exposition) {
    assert_eq!(response.status(), 200, "/metrics answers 200");
    let text = response.text().await.expect("the /metrics body is read");
    let parsed =
        check(&text).unwrap_or_else(|problems| panic!("{}\n---\n{text}", problems.join("\n")));
    (text, parsed)
}

/// Asserts that `exposition` (read from `text`) exports exactly the `expected` families:
/// none missing (recorded but never described, or not recorded at all) and none unknown.
pub fn assert_families(exposition: &Exposition, expected: &[&str], text: &str) {
    let exported: BTreeSet<&str> = exposition.families.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(exported, expected, "{text}");
}

/// Asserts that each of `lines` stands in `text` as a whole line (a sample and its value).
pub fn assert_lines(text: &str, lines: &[&str]) {
    for needle in lines {
        assert!(
            text.lines().any(|l| l == *needle),
            "{needle} missing:\n{text}"
        );
    }
}

#[derive(Default)]
struct Reader {
    problems: Vec<String>,
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    /// Families whose block of lines has ended (another family started after them).
    closed: BTreeSet<String>,
    current: Option<String>,
    samples: Vec<(String, Sample)>,
    seen_series: BTreeSet<String>,
}

impl Reader {
    fn line(&mut self, number: usize, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if let Some(rest) = line.strip_prefix('#') {
            self.comment(number, rest.trim_start());
            return;
        }
        match parse_sample(line) {
            Ok(sample) => self.sample(number, sample),
            Err(why) => self.problem(number, format!("malformed sample ({why}): {line}")),
        }
    }

    fn problem(&mut self, number: usize, message: String) {
        self.problems.push(format!("line {number}: {message}"));
    }

    fn comment(&mut self, number: usize, rest: &str) {
        let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if keyword != "HELP" && keyword != "TYPE" {
            return; // a plain comment
        }
        let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if !is_metric_name(name) {
            self.problem(number, format!("bad metric name in # {keyword}: {name:?}"));
            return;
        }
        self.enter(number, name);
        let table = if keyword == "HELP" {
            &mut self.help
        } else {
            &mut self.kind
        };
        if table.insert(name.to_owned(), text.to_owned()).is_some() {
            self.problem(number, format!("second # {keyword} for {name}"));
        }
        if keyword == "TYPE" {
            if !matches!(
                text,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                self.problem(number, format!("unknown type {text:?} for {name}"));
            }
            if self.samples.iter().any(|(family, _)| family == name) {
                self.problem(number, format!("# TYPE for {name} after its samples"));
            }
        }
    }

    /// Notes that `family`'s lines continue or begin here; a family resumed after another
    /// one started is a duplicate family.
    fn enter(&mut self, number: usize, family: &str) {
        if self.current.as_deref() == Some(family) {
            return;
        }
        if self.closed.contains(family) {
            self.problem(
                number,
                format!("family {family} appears again after other families (duplicate)"),
            );
        }
        if let Some(previous) = self.current.replace(family.to_owned()) {
            self.closed.insert(previous);
        }
    }

    fn sample(&mut self, number: usize, sample: Sample) {
        let family = family_of(&sample.name, |f| self.kind.contains_key(f))
            .unwrap_or(&sample.name)
            .to_owned();
        self.enter(number, &family);
        let mut labels = sample.labels.clone();
        labels.sort();
        let series = format!("{}{labels:?}", sample.name);
        if !self.seen_series.insert(series) {
            self.problem(number, format!("series repeated: {}", sample.name));
        }
        let names: BTreeSet<&str> = sample.labels.iter().map(|(n, _)| n.as_str()).collect();
        if names.len() != sample.labels.len() {
            self.problem(number, format!("a label repeated in {}", sample.name));
        }
        self.samples.push((family, sample));
    }

    fn finish(mut self) -> Result<Exposition, Vec<String>> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for (family, _) in &self.samples {
            families
                .entry(family.clone())
                .or_insert_with(|| Family {
                    kind: String::new(),
                    help: String::new(),
                    samples: 0,
                })
                .samples += 1;
        }
        for name in self.help.keys().chain(self.kind.keys()) {
            families.entry(name.clone()).or_insert_with(|| Family {
                kind: String::new(),
                help: String::new(),
                samples: 0,
            });
        }
        for (name, family) in &mut families {
            match self.help.get(name) {
                Some(help) if !help.trim().is_empty() => family.help = help.clone(),
                Some(_) => self.problems.push(format!("{name}: empty # HELP")),
                None => self.problems.push(format!("{name}: no # HELP")),
            }
            match self.kind.get(name) {
                Some(kind) => family.kind = kind.clone(),
                None => self.problems.push(format!("{name}: no # TYPE")),
            }
        }
        for (name, family) in &families {
            let samples = self
                .samples
                .iter()
                .filter(|(f, _)| f == name)
                .map(|(_, s)| s);
            match family.kind.as_str() {
                "histogram" => check_histogram(name, samples, &mut self.problems),
                "counter" | "gauge" | "untyped" => {
                    for s in samples.filter(|s| s.name != *name) {
                        self.problems
                            .push(format!("{name}: sample {} outside its family", s.name));
                    }
                }
                _ => {}
            }
        }
        if self.problems.is_empty() {
            Ok(Exposition {
                families,
                samples: self.samples.into_iter().map(|(_, s)| s).collect(),
            })
        } else {
            Err(self.problems)
        }
    }
}

/// The family a sample belongs to: itself, or the name without a histogram or summary suffix,
/// whichever `known` accepts.
fn family_of(sample: &str, known: impl Fn(&str) -> bool) -> Option<&str> {
    if known(sample) {
        return Some(sample);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| sample.strip_suffix(suffix))
        .find(|base| known(base))
}

/// Per label set (without `le`): buckets present, cumulative, ending in `+Inf` equal to
/// `_count`; `_sum` present.
fn check_histogram<'a>(
    name: &str,
    samples: impl Iterator<Item = &'a Sample>,
    problems: &mut Vec<String>,
) {
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: Option<f64>,
    }
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for sample in samples {
        let mut le = None;
        let mut rest: Vec<_> = sample
            .labels
            .iter()
            .filter(|(label, value)| {
                if label == "le" {
                    le = Some(value.clone());
                    false
                } else {
                    true
                }
            })
            .collect();
        rest.sort();
        let entry = series.entry(format!("{rest:?}")).or_default();
        let suffix = sample.name.strip_prefix(name).unwrap_or_default();
        match (suffix, le) {
            ("_bucket", Some(le)) => match parse_value(&le) {
                Ok(bound) => entry.buckets.push((bound, sample.value)),
                Err(_) => problems.push(format!("{name}: bad le {le:?}")),
            },
            ("_bucket", None) => problems.push(format!("{name}: a bucket without le")),
            ("_sum", None) => entry.sum = Some(sample.value),
            ("_count", None) => entry.count = Some(sample.value),
            _ => problems.push(format!("{name}: unexpected sample {}", sample.name)),
        }
    }
    for (labels, s) in series {
        let at = format!("{name}{labels}");
        if s.sum.is_none() {
            problems.push(format!("{at}: no _sum"));
        }
        let Some(count) = s.count else {
            problems.push(format!("{at}: no _count"));
            continue;
        };
        if s.buckets.windows(2).any(|w| w[0].0 >= w[1].0) {
            problems.push(format!("{at}: bucket bounds not increasing"));
        }
        if s.buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            problems.push(format!("{at}: bucket counts not cumulative"));
        }
        match s.buckets.last() {
            Some((bound, last)) if bound.is_infinite() && *bound > 0.0 => {
                if *last != count {
                    problems.push(format!("{at}: +Inf bucket {last} but _count {count}"));
                }
            }
            _ => problems.push(format!("{at}: no le=\"+Inf\" bucket last")),
        }
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    is_metric_name(name) && !name.contains(':')
}

fn parse_value(raw: &str) -> Result<f64, String> {
    match raw {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => raw.parse().map_err(|_| format!("bad value {raw:?}")),
    }
}

/// `name{a="1",b="x\"y"} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or_default())?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Label names and values, in the order written.
type Labels = Vec<(String, String)>;

/// Labels after the `{`; returns them and the text after the closing `}`.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = text.split_once("=\"").ok_or("label without =\"")?;
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        text = &after[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP requests_total Requests served.
# TYPE requests_total counter
requests_total{method=\"GET\",route=\"/a\"} 3
requests_total{method=\"other\",route=\"unmatched\"} 1
# HELP latency_seconds Request latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{route=\"/a\",le=\"0.1\"} 1
latency_seconds_bucket{route=\"/a\",le=\"1\"} 2
latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2
latency_seconds_sum{route=\"/a\"} 0.7
latency_seconds_count{route=\"/a\"} 2
# HELP up 1 when up.
# TYPE up gauge
up 1

";

    fn problems(text: &str) -> String {
        check(text).expect_err("should be refused").join("\n")
    }

    #[test]
    fn a_well_formed_exposition_passes_and_is_counted() {
        let exposition = check(GOOD).unwrap();

        assert_eq!(exposition.series_count(), 8);
        assert_eq!(exposition.families["latency_seconds"].kind, "histogram");
        assert_eq!(exposition.families["latency_seconds"].samples, 5);
        assert_eq!(
            exposition.label_values("requests_total", "method"),
            BTreeSet::from(["GET".to_owned(), "other".to_owned()])
        );
        assert_eq!(
            exposition.label_values("latency_seconds", "route"),
            BTreeSet::from(["/a".to_owned()])
        );
    }

    #[test]
    fn a_family_without_help_is_refused() {
        let text = GOOD.replace("# HELP up 1 when up.\n", "");
        assert!(problems(&text).contains("up: no # HELP"));
    }

    #[test]
    fn a_family_without_type_is_refused() {
        let text = GOOD.replace("# TYPE requests_total counter\n", "");
        assert!(problems(&text).contains("requests_total: no # TYPE"));
    }

    #[test]
    fn a_family_split_in_two_is_a_duplicate() {
        let text = format!("{GOOD}requests_total{{method=\"PUT\",route=\"/a\"}} 1\n");
        assert!(problems(&text).contains("duplicate"));
    }

    #[test]
    fn a_second_help_for_one_family_is_refused() {
        let text = GOOD.replace("# TYPE up gauge", "# HELP up again\n# TYPE up gauge");
        assert!(problems(&text).contains("second # HELP for up"));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "up",
            "up one",
            "up{a=\"1\" 1",
            "up{a=1} 1",
            "up{a=\"x\\q\"} 1",
            "9up 1",
            "up 1 2 3",
        ] {
            let text = GOOD.replace("up 1\n", &format!("{bad}\n"));
            assert!(problems(&text).contains("malformed"), "{bad}");
        }
    }

    #[test]
    fn a_repeated_series_is_refused() {
        let text = GOOD.replace("up 1\n", "up 1\nup 2\n");
        assert!(problems(&text).contains("series repeated"));
    }

    #[test]
    fn histogram_buckets_must_be_cumulative() {
        let text = GOOD.replace("le=\"1\"} 2", "le=\"1\"} 0");
        assert!(problems(&text).contains("not cumulative"));
    }

    #[test]
    fn histogram_needs_an_inf_bucket_matching_its_count() {
        let missing = GOOD.replace("latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n", "");
        assert!(problems(&missing).contains("+Inf"));
        let wrong = GOOD.replace(
            "latency_seconds_count{route=\"/a\"} 2",
            "latency_seconds_count{route=\"/a\"} 5",
        );
        assert!(problems(&wrong).contains("_count 5"));
    }

    #[test]
    fn histogram_needs_its_sum() {
        let text = GOOD.replace("latency_seconds_sum{route=\"/a\"} 0.7\n", "");
        assert!(problems(&text).contains("no _sum"));
    }

    #[test]
    fn escaped_label_values_are_read() {
        let text = GOOD.replace("route=\"unmatched\"", "route=\"a\\\"b\\\\c\"");
        let exposition = check(&text).unwrap();
        assert!(
            exposition
                .label_values("requests_total", "route")
                .contains("a\"b\\c")
        );
    }
}
