//! Config problems: what is wrong, where (YAML path and line), collected so all are shown at once.

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::{LineIndex, YamlPath};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Where in the document, e.g. `routes[0].cluster`.
    pub path: Option<YamlPath>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How a problem with an environment variable's value begins; such a problem has no path and
/// no line, and is shown without the file's name.
const FROM_ENVIRONMENT: &str = "environment variable ";

/// At most this many characters of an environment variable's value are shown.
const ENV_VALUE_SHOWN: usize = 64;

impl Problem {
    /// A problem with the value environment variable `variable` gave (`value`), e.g. a region
    /// name that overrides the file's.
    pub fn environment(variable: &str, value: &str, message: &str) -> Self {
        let mut shown: String = value.chars().take(ENV_VALUE_SHOWN).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        Self {
            line: None,
            path: None,
            message: format!("{FROM_ENVIRONMENT}{variable}=`{shown}`: {message}"),
        }
    }

    /// Whether this is a problem with an environment variable rather than with the file.
    pub fn is_environment(&self) -> bool {
        self.path.is_none() && self.line.is_none() && self.message.starts_with(FROM_ENVIRONMENT)
    }
}

/// Problems gathered while reading and compiling a config.
#[derive(Debug, Default, Clone)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    /// Record a problem at `path`; its line is filled in by [`Problems::with_lines`].
    pub fn at(&mut self, path: YamlPath, message: impl Into<String>) {
        self.0.push(Problem {
            line: None,
            path: Some(path),
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// Replace each problem at `path` with what `change` makes of it.
    pub fn replace_at(&mut self, path: &YamlPath, change: impl Fn(&Problem) -> Problem) {
        for problem in &mut self.0 {
            if problem.path.as_ref() == Some(path) {
                *problem = change(problem);
            }
        }
    }

    /// Fill in missing lines from the document's index and sort by line.
    pub fn with_lines(mut self, index: &LineIndex) -> Self {
        for problem in &mut self.0 {
            if problem.line.is_none() {
                problem.line = problem.path.as_ref().and_then(|p| index.line_of(p));
            }
        }
        self.0.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        self
    }
}

/// Why a config could not be loaded. Shown to operators by `meridian check`, at start-up and on
/// reload; each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (check the path given with -c)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid { file: PathBuf, problems: Problems },
    /// `meridian import istio` could not read its input as YAML.
    #[error("cannot read the Istio YAML: {}", render_import_problems(.0))]
    ImportYaml(Problems),
    #[error("no VirtualService found: meridian import istio needs at least one")]
    NoVirtualService,
    /// `meridian import istio`: destinations whose region no flag, label or name gives.
    #[error("{}", render_unknown_regions(.0))]
    UnknownRegions(Vec<String>),
}

impl ConfigError {
    pub fn invalid(file: &Path, problems: Problems) -> Self {
        Self::Invalid {
            file: file.to_path_buf(),
            problems,
        }
    }

    /// The individual problems (empty for a read error).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { .. } | Self::NoVirtualService | Self::UnknownRegions(_) => Vec::new(),
            Self::Invalid { problems, .. } | Self::ImportYaml(problems) => {
                problems.iter().cloned().collect()
            }
        }
    }
}

fn render_problems(file: &Path, problems: &Problems) -> String {
    let mut out = format!(
        "{} is invalid ({}); nothing was changed:",
        file.display(),
        super::words::count(problems.len(), "problem"),
    );
    for p in problems.iter() {
        if p.is_environment() {
            out.push_str(&format!("\n  {p}"));
            continue;
        }
        match p.line {
            Some(line) => out.push_str(&format!("\n  {}:{line}: {p}", file.display())),
            None => out.push_str(&format!("\n  {}: {p}", file.display())),
        }
    }
    out
}

/// At most this many unknown destinations are listed; the rest are counted.
const UNKNOWN_REGIONS_SHOWN: usize = 20;

fn render_unknown_regions(destinations: &[String]) -> String {
    if destinations.is_empty() {
        return "no destination has a known region: nothing to import".into();
    }
    let mut out = format!(
        "the region of {} cannot be known, and Meridian does not guess one; nothing was written (--allow-partial imports the rest and reports these):",
        super::words::count(destinations.len(), "destination"),
    );
    for d in destinations.iter().take(UNKNOWN_REGIONS_SHOWN) {
        out.push_str("\n  ");
        out.push_str(d);
    }
    if destinations.len() > UNKNOWN_REGIONS_SHOWN {
        out.push_str(&format!(
            "\n  … and {} more",
            destinations.len() - UNKNOWN_REGIONS_SHOWN
        ));
    }
    out
}

fn render_import_problems(problems: &Problems) -> String {
    problems
        .iter()
        .map(|p| match p.line {
            Some(l) => format!("line {l}: {p}"),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
