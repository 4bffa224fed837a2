//! Where each imported destination runs, and how the import knows: an explicit
//! `--region NAME=HOST` flag, a subset's `region` or `topology.kubernetes.io/region` label,
//! or a known region's name inside the subset's or service's name (with or without its
//! trailing number: `fingerprint-api-us-east` is us-east-1). A destination none of these
//! place is not guessed: the import fails naming it and what to add, unless `--allow-partial`.
//!
//! Used by the DestinationRule and VirtualService importers; the options come from the
//! command line (`meridian import istio`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::aws_regions::{self, AWS_REGIONS, KnownRegion};
use super::{Builder, FieldStatus, Resource};

/// The longest host a `--region` flag may name (a DNS name, plus `/subset`).
const MAX_FLAG_HOST: usize = 253 + 1 + 63;

/// What the Istio documents cannot say, given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `--region NAME=HOST`: HOST's destinations run in NAME (wins over inference).
    pub regions: Vec<RegionFlag>,
    /// `--local-region NAME`: the config's `local_region`.
    pub local_region: Option<String>,
    /// `--allow-partial`: leave out destinations whose region is unknown (reported) instead
    /// of failing.
    pub allow_partial: bool,
}

impl ImportOptions {
    /// Options from the command line's `--region` values (parsed here, so a malformed one is
    /// named without echoing all of it).
    pub fn from_flags(
        regions: &[String],
        local_region: Option<String>,
        allow_partial: bool,
    ) -> Result<Self, String> {
        let regions = regions
            .iter()
            .map(|f| f.parse().map_err(|e| format!("--region {e}")))
            .collect::<Result<Vec<RegionFlag>, String>>()?;
        Self::new(regions, local_region, allow_partial)
    }

    /// Options from parsed flags; a host named by two `--region` flags or an unknown
    /// `--local-region` is refused.
    pub fn new(
        regions: Vec<RegionFlag>,
        local_region: Option<String>,
        allow_partial: bool,
    ) -> Result<Self, String> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for flag in &regions {
            if let Some(first) = seen.insert(&flag.host, &flag.region) {
                return Err(format!(
                    "--region names `{}` twice ({first} and {}): give each host once",
                    flag.host, flag.region
                ));
            }
        }
        if let Some(name) = &local_region {
            known_or_hint(name).map_err(|hint| format!("--local-region {name}: {hint}"))?;
        }
        Ok(Self {
            regions,
            local_region,
            allow_partial,
        })
    }
}

/// One `--region NAME=HOST` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionFlag {
    pub region: String,
    /// A destination host as written (`fingerprint-api`, `api.shop.svc.cluster.local`), its
    /// short name, or `host/subset` for one subset.
    pub host: String,
}

impl fmt::Display for RegionFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--region {}={}", self.region, self.host)
    }
}

impl FromStr for RegionFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shown: String = s.chars().take(80).collect();
        let Some((region, host)) = s.split_once('=') else {
            return Err(format!(
                "`{shown}` is not NAME=HOST (e.g. --region us-east-1=fingerprint-api)"
            ));
        };
        if region.is_empty() || host.is_empty() {
            return Err(format!(
                "`{shown}` needs both a region and a host (e.g. --region us-east-1=fingerprint-api)"
            ));
        }
        if host.len() > MAX_FLAG_HOST {
            return Err(format!(
                "the host in `{shown}…` is {} bytes long; a destination host is at most {MAX_FLAG_HOST}",
                host.len()
            ));
        }
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
            && host.matches('/').count() <= 1;
        if !host_ok {
            return Err(format!(
                "the host in `{shown}` may hold only letters, digits, `-`, `.`, `_` and one `/` (host/subset)"
            ));
        }
        known_or_hint(region).map_err(|hint| format!("`{shown}`: {hint}"))?;
        Ok(Self {
            region: region.to_owned(),
            host: host.to_owned(),
        })
    }
}

/// The known region `name`, or why it is not one.
fn known_or_hint(name: &str) -> Result<&'static KnownRegion, String> {
    aws_regions::known(name).ok_or_else(|| {
        let shown: String = name.chars().take(64).collect();
        let close: Vec<&str> = in_name(name)
            .and_then(|m| m.ok())
            .map(|m| vec![m.region.name])
            .unwrap_or_default();
        format!(
            "`{shown}` is not a region Meridian knows (it needs an AWS region name, such as us-east-1 or eu-west-1, to know where it is){}",
            close
                .first()
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default()
        )
    })
}

/// A known region found inside a name, and where.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct NameMatch {
    pub region: &'static KnownRegion,
    /// Byte range of the region in the name.
    pub start: usize,
    pub end: usize,
    /// Written without its number (`us-east` for us-east-1).
    pub numberless: bool,
}

/// The known region inside `name`; `Err` lists them when it names more than one.
pub(super) fn in_name(name: &str) -> Option<Result<NameMatch, Vec<&'static str>>> {
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for part in name.split(['-', '.', '_']) {
        tokens.push((at, part));
        at += part.len() + 1;
    }
    let mut found: Vec<NameMatch> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match match_at(&tokens, i) {
            Some((region, used, numberless)) => {
                let start = tokens[i].0;
                let (last_at, last) = tokens[i + used - 1];
                found.push(NameMatch {
                    region,
                    start,
                    end: last_at + last.len(),
                    numberless,
                });
                i += used;
            }
            None => i += 1,
        }
    }
    let first = *found.first()?;
    let mut names: Vec<&'static str> = found.iter().map(|m| m.region.name).collect();
    names.dedup();
    if names.iter().any(|n| *n != first.region.name) {
        return Some(Err(names));
    }
    Some(Ok(first))
}

/// The region whose words start at token `i`: (region, tokens used, written without number).
fn match_at(tokens: &[(usize, &str)], i: usize) -> Option<(&'static KnownRegion, usize, bool)> {
    let mut best: Option<(&'static KnownRegion, usize, bool)> = None;
    for region in AWS_REGIONS {
        let words: Vec<&str> = region.name.split('-').collect();
        let n = words.len();
        let here = tokens.get(i..).unwrap_or(&[]);
        let same = |k: usize| {
            here.get(k)
                .is_some_and(|(_, t)| t.eq_ignore_ascii_case(words[k]))
        };
        if (0..n).all(same) {
            if best.is_none_or(|(_, used, _)| used < n) {
                best = Some((region, n, false));
            }
            continue;
        }
        // Without its number: only the region numbered 1, and not followed by another number.
        let next_is_number = here
            .get(n - 1)
            .is_some_and(|(_, t)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
        if words[n - 1] == "1"
            && (0..n - 1).all(same)
            && !next_is_number
            && best.is_none_or(|(_, used, _)| used < n - 1)
        {
            best = Some((region, n - 1, true));
        }
    }
    best
}

/// `name` without the region inside it: `fingerprint-api-us-east` → `fingerprint-api`.
pub(super) fn strip_region(name: &str) -> String {
    let Some(Ok(m)) = in_name(name) else {
        return name.to_owned();
    };
    let before = name[..m.start].trim_end_matches(['-', '.', '_']);
    let after = name[m.end..].trim_start_matches(['-', '.', '_']);
    match (before.is_empty(), after.is_empty()) {
        (true, true) => name.to_owned(),
        (false, false) => format!("{before}-{after}"),
        _ => format!("{before}{after}"),
    }
}

/// How a region was learnt (shown in the report).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    pub region: String,
    pub how: String,
    /// Given by a flag (mapped), not inferred.
    pub flag: bool,
    /// Learnt from the destination's subset (label, name or a `host/subset` flag): the
    /// subset is a region of the service, not a version of it.
    pub by_subset: bool,
}

/// (service short name, subset name) → the subset's region, or why it has none.
pub(super) type Subsets = BTreeMap<(String, String), Result<Placed, String>>;

/// A DestinationRule subset's region: its labels first, then its name. `None`: it says
/// nothing about a region.
pub(super) fn subset_region(subset: &Value, name: &str) -> Option<Result<Placed, String>> {
    for label in ["region", "topology.kubernetes.io/region"] {
        if let Some(value) = subset
            .get("labels")
            .and_then(|l| l.get(label))
            .and_then(Value::as_str)
        {
            return Some(match known_or_hint(value) {
                Ok(region) => Ok(Placed {
                    region: region.name.to_owned(),
                    how: format!("subset `{name}`'s label {label}={value}"),
                    flag: false,
                    by_subset: true,
                }),
                Err(hint) => Err(format!("subset `{name}`'s label {label}: {hint}")),
            });
        }
    }
    from_name(name, &format!("subset name `{name}`"))
}

/// The region a name carries, described as `what`.
fn from_name(name: &str, what: &str) -> Option<Result<Placed, String>> {
    Some(match in_name(name)? {
        Ok(m) => Ok(Placed {
            region: m.region.name.to_owned(),
            how: if m.numberless {
                format!(
                    "{what} (`{}` without a number: {})",
                    &name[m.start..m.end],
                    m.region.name
                )
            } else {
                what.to_owned()
            },
            flag: false,
            by_subset: true,
        }),
        Err(names) => Err(format!(
            "{what} names more than one region ({})",
            names.join(", ")
        )),
    })
}

/// A route destination's region: a `--region` flag, then its subset, then its name.
pub(super) fn destination(
    options: &ImportOptions,
    host: &str,
    short: &str,
    subset: Option<&str>,
    subsets: &Subsets,
) -> Result<Placed, String> {
    let with_subset = subset.map(|s| format!("{short}/{s}"));
    let flag = options
        .regions
        .iter()
        .find(|f| with_subset.as_deref() == Some(f.host.as_str()))
        .or_else(|| {
            options
                .regions
                .iter()
                .find(|f| f.host == host || f.host == short)
        });
    if let Some(flag) = flag {
        return Ok(Placed {
            region: flag.region.clone(),
            how: flag.to_string(),
            flag: true,
            by_subset: with_subset.as_deref() == Some(flag.host.as_str()),
        });
    }
    if let Some(subset) = subset {
        if let Some(known) = subsets.get(&(short.to_owned(), subset.to_owned())) {
            return known.clone();
        }
        if let Some(found) = from_name(subset, &format!("subset name `{subset}`")) {
            return found;
        }
    }
    from_name(short, &format!("service name `{short}`"))
        .map(|found| {
            found.map(|p| Placed {
                by_subset: false,
                ..p
            })
        })
        .unwrap_or_else(|| Err("no region label on its subset and no region in its name".into()))
}

impl Builder {
    /// The region of destination `at` of `r`, noted in the report; `None` (also noted) when
    /// it cannot be known, so the destination is left out.
    pub(super) fn place(
        &mut self,
        r: &Resource,
        at: &str,
        host: &str,
        (short, subset): (&str, Option<&str>),
        subsets: &Subsets,
        endpoint: &str,
    ) -> Option<Placed> {
        match destination(&self.options, host, short, subset, subsets) {
            Ok(placed) => {
                if placed.flag {
                    self.used_flags.insert(placed.how.clone());
                }
                let status = if placed.flag {
                    FieldStatus::Mapped
                } else {
                    FieldStatus::Inferred
                };
                self.note(
                    r,
                    format!("{at}.destination.host"),
                    status,
                    format!(
                        "DNS endpoint {endpoint} in {}, from {}",
                        placed.region, placed.how
                    ),
                );
                Some(placed)
            }
            Err(why) => {
                let target = match subset {
                    Some(s) => format!("`{host}` (subset `{s}`)"),
                    None => format!("`{host}`"),
                };
                let fix = format!(
                    "add `--region <region>={short}` (e.g. --region us-east-1={short}) or a `region` label on its DestinationRule subset"
                );
                self.unknown.push(format!(
                    "{} {at}: destination {target}: {why}; {fix}",
                    r.label()
                ));
                self.note(
                    r,
                    at,
                    FieldStatus::Unsupported,
                    format!("destination {target} left out: its region is unknown ({why}); {fix}"),
                );
                None
            }
        }
    }

    /// The cluster a destination joins: its service's base name, or `<base>-<subset>` for a
    /// subset that is not a region (a version: other pods, so not interchangeable). A subset
    /// cluster takes its DestinationRule's settings.
    pub(super) fn cluster_for(
        &mut self,
        short: &str,
        subset: Option<&str>,
        by_subset: bool,
    ) -> String {
        let base = strip_region(short);
        match subset {
            Some(subset) if !by_subset => {
                let name = format!("{base}-{subset}");
                self.settings_from.insert(name.clone(), base);
                name
            }
            _ => base,
        }
    }

    /// Report flags that placed nothing (a typo would otherwise pass silently).
    pub(super) fn note_unused_flags(&mut self) {
        let unused: Vec<String> = self
            .options
            .regions
            .iter()
            .map(ToString::to_string)
            .filter(|f| !self.used_flags.contains(f))
            .collect();
        for flag in unused {
            self.report.insert(
                (COMMAND.into(), flag),
                (
                    FieldStatus::Unsupported,
                    "matched no destination host (give the host as a route destination writes it, its short name, or host/subset)".into(),
                ),
            );
        }
    }
}

/// The report's name for what the command line said.
pub(super) const COMMAND: &str = "meridian import";

/// Regions in use, for the config's `regions:` (each known, so each has coordinates).
pub(super) fn coordinates(names: &BTreeSet<String>) -> Vec<(&'static KnownRegion, &String)> {
    names
        .iter()
        .filter_map(|n| aws_regions::known(n).map(|k| (k, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn regions_in_names() {
        // (name, region found, name without it)
        let cases = [
            (
                "fingerprint-api-us-east",
                Some("us-east-1"),
                "fingerprint-api",
            ),
            (
                "fingerprint-api-eu-west",
                Some("eu-west-1"),
                "fingerprint-api",
            ),
            (
                "fingerprint-api-ap-southeast",
                Some("ap-southeast-1"),
                "fingerprint-api",
            ),
            (
                "fingerprint-api-ap-southeast-1",
                Some("ap-southeast-1"),
                "fingerprint-api",
            ),
            ("api-eu-west-2", Some("eu-west-2"), "api"),
            ("us-east-2-api-v2", Some("us-east-2"), "api-v2"),
            ("api-us-gov-west", Some("us-gov-west-1"), "api"),
            ("api-US-EAST-1", Some("us-east-1"), "api"),
            ("us-east-1", Some("us-east-1"), "us-east-1"),
            // Numbered, but not a region that exists: no guess.
            ("api-eu-west-9", None, "api-eu-west-9"),
            ("api-us-central1", None, "api-us-central1"),
            ("api", None, "api"),
            ("reviews-v2", None, "reviews-v2"),
            ("", None, ""),
        ];
        for (name, want, base) in cases {
            let got = in_name(name).and_then(|m| m.ok()).map(|m| m.region.name);
            assert_eq!(got, want, "{name}");
            assert_eq!(strip_region(name), base, "{name}");
        }
        assert_eq!(
            in_name("us-east-1-to-eu-west-1"),
            Some(Err(vec!["us-east-1", "eu-west-1"]))
        );
    }

    #[test]
    fn region_flags() {
        let ok: RegionFlag = "us-east-1=fingerprint-api".parse().unwrap();
        assert_eq!(
            (ok.region.as_str(), ok.host.as_str()),
            ("us-east-1", "fingerprint-api")
        );
        assert!("eu-west-1=api/canary".parse::<RegionFlag>().is_ok());
        // (flag, part of the error)
        let bad = [
            ("us-east-1", "NAME=HOST"),
            ("=api", "both a region and a host"),
            ("us-east-1=", "both a region and a host"),
            ("us-central1=api", "not a region Meridian knows"),
            ("us-east=api", "did you mean us-east-1?"),
            ("us-east-1=api=x", "only letters"),
            ("us-east-1=a b", "only letters"),
            ("us-east-1=a/b/c", "only letters"),
            ("us-east-1=é", "only letters"),
        ];
        for (flag, want) in bad {
            let err = flag.parse::<RegionFlag>().unwrap_err();
            assert!(err.contains(want), "{flag}: {err}");
        }
        let huge = format!("us-east-1={}", "a".repeat(100_000));
        let err = huge.parse::<RegionFlag>().unwrap_err();
        assert!(err.contains("at most") && err.len() < 400, "{err}");
        let huge_region = format!("{}=api", "x".repeat(100_000));
        assert!(huge_region.parse::<RegionFlag>().unwrap_err().len() < 400);
    }

    #[test]
    fn duplicate_flags_and_local_region() {
        let flags = |list: &[&str]| -> Vec<RegionFlag> {
            list.iter().map(|f| f.parse().unwrap()).collect()
        };
        let err = ImportOptions::new(flags(&["us-east-1=api", "eu-west-1=api"]), None, false)
            .unwrap_err();
        assert!(
            err.contains("`api` twice (us-east-1 and eu-west-1)"),
            "{err}"
        );
        assert!(
            ImportOptions::new(flags(&["us-east-1=api", "us-east-1=api"]), None, false).is_err()
        );
        assert!(
            ImportOptions::new(flags(&["us-east-1=api", "eu-west-1=web"]), None, false).is_ok()
        );
        let err = ImportOptions::new(vec![], Some("default".into()), false).unwrap_err();
        assert!(err.contains("--local-region default"), "{err}");
    }

    #[test]
    fn destinations_in_order_of_authority() {
        let options = ImportOptions::new(
            vec![
                "eu-west-1=fingerprint-api-us-east".parse().unwrap(),
                "ap-southeast-1=api/canary".parse().unwrap(),
            ],
            None,
            false,
        )
        .unwrap();
        let mut subsets = Subsets::new();
        subsets.insert(
            ("api".into(), "primary".into()),
            subset_region(
                &json!({ "labels": { "topology.kubernetes.io/region": "us-east-1" } }),
                "primary",
            )
            .unwrap(),
        );
        subsets.insert(
            ("api".into(), "gcp".into()),
            subset_region(&json!({ "labels": { "region": "us-central1" } }), "gcp").unwrap(),
        );
        let region = |host: &str, short: &str, subset: Option<&str>| {
            destination(&options, host, short, subset, &subsets).map(|p| p.region)
        };
        // (host, short, subset, region or part of the reason)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<&'a str, &'a str>);
        let cases: [Case<'_>; 7] = [
            // The flag wins over the name.
            (
                "fingerprint-api-us-east",
                "fingerprint-api-us-east",
                None,
                Ok("eu-west-1"),
            ),
            (
                "fingerprint-api-eu-west.api.svc.cluster.local",
                "fingerprint-api-eu-west",
                None,
                Ok("eu-west-1"),
            ),
            ("api", "api", Some("primary"), Ok("us-east-1")),
            ("api", "api", Some("canary"), Ok("ap-southeast-1")),
            ("api", "api", Some("us-west"), Ok("us-west-1")),
            ("api", "api", Some("gcp"), Err("us-central1")),
            ("api", "api", None, Err("no region label")),
        ];
        for (host, short, subset, want) in cases {
            match (region(host, short, subset), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{host} {subset:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{host}: {got}"),
                (got, want) => panic!("{host} {subset:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
