//! Wording of messages for people: counts with the right noun form ("1 listener",
//! "2 listeners") and the nearest valid name to a typo ("did you mean `weights`?").
//!
//! Used by the config loader (unknown fields), the compiler's messages and the command line
//! (`meridian check`). Plain functions, no state.

/// `n` and the noun in the form that goes with it: `count(1, "route")` is "1 route",
/// `count(3, "route")` is "3 routes". Every noun Meridian counts takes an "s".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Longest name compared: a key longer than any setting is no typo of one, and the distance
/// table stays small whatever a file holds.
const MAX_COMPARED: usize = 64;

/// Edit distance between `a` and `b` counting insertions, deletions, substitutions and
/// swaps of two neighbouring characters (optimal string alignment), so `wieght` is one edit
/// from `weight`. `None` when either is longer than [`MAX_COMPARED`] characters.
pub fn edit_distance(a: &str, b: &str) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > MAX_COMPARED || b.len() > MAX_COMPARED {
        return None;
    }
    // Three rows of the table: two back (for swaps), one back, and the current one.
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut current: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    Some(previous[b.len()])
}

/// The candidate nearest to `typo`, when it is near enough to be what was meant: at most
/// one edit for names of up to four characters, two up to eight, three beyond. Case is
/// ignored (`Weights` suggests `weights`); ties go to the first candidate given.
pub fn nearest<'a>(typo: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let typo = typo.to_ascii_lowercase();
    let limit = match typo.chars().count() {
        0 => return None,
        1..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &'a str)> = None;
    for &candidate in candidates {
        let Some(distance) = edit_distance(&typo, &candidate.to_ascii_lowercase()) else {
            continue;
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_form_of_their_number() {
        for (n, noun, expected) in [
            (0, "listener", "0 listeners"),
            (1, "listener", "1 listener"),
            (2, "listener", "2 listeners"),
            (1, "region", "1 region"),
            (64, "region", "64 regions"),
            (1, "problem", "1 problem"),
            (100_000, "route", "100000 routes"),
        ] {
            assert_eq!(count(n, noun), expected);
        }
    }

    #[test]
    fn edit_distance_counts_each_kind_of_edit() {
        for (a, b, expected) in [
            ("", "", Some(0)),
            ("weight", "weight", Some(0)),
            ("wieght", "weight", Some(1)),  // swap
            ("weigt", "weight", Some(1)),   // insertion
            ("weightt", "weight", Some(1)), // deletion
            ("waight", "weight", Some(1)),  // substitution
            ("wieghts", "weights", Some(1)),
            ("wieghts", "weight", Some(2)),
            ("", "abc", Some(3)),
            ("abc", "", Some(3)),
            ("ca", "abc", Some(3)), // optimal string alignment, not full Damerau
            ("héllo", "hello", Some(1)), // characters, not bytes
        ] {
            assert_eq!(edit_distance(a, b), expected, "{a} → {b}");
        }
    }

    #[test]
    fn edit_distance_refuses_huge_names() {
        let huge = "a".repeat(1_000_000);
        assert_eq!(edit_distance(&huge, "weight"), None);
        assert_eq!(edit_distance("weight", &huge), None);
        assert_eq!(nearest(&huge, &["weight"]), None);
    }

    #[test]
    fn nearest_suggests_only_what_is_close() {
        let steering = [
            "mode",
            "overprovisioning",
            "countries",
            "continents",
            "only",
            "weights",
            "order",
        ];
        let endpoint = ["address", "weight"];
        for (typo, candidates, expected) in [
            ("wieghts", &steering[..], Some("weights")),
            ("weight", &steering[..], Some("weights")),
            ("Weights", &steering[..], Some("weights")),
            ("mdoe", &steering[..], Some("mode")),
            ("overprovisionning", &steering[..], Some("overprovisioning")),
            ("contries", &steering[..], Some("countries")),
            ("continent", &steering[..], Some("continents")),
            ("region", &steering[..], None),
            ("x", &steering[..], None),
            ("", &steering[..], None),
            ("wieght", &endpoint[..], Some("weight")),
            ("adress", &endpoint[..], Some("address")),
            ("port", &endpoint[..], None),
            ("wieght", &[][..], None),
        ] {
            assert_eq!(nearest(typo, candidates), expected, "{typo}");
        }
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        assert_eq!(nearest("cat", &["bat", "cot"]), Some("bat"));
        assert_eq!(nearest("cat", &["cot", "bat"]), Some("cot"));
    }
}
