//! Country and continent codes, which continent a country is on, and continent centres.
//!
//! Used for country overrides (which carry no coordinates of their own) and for matching the
//! `continents:` steering lists.

use std::fmt;

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// A continent code as MaxMind writes it: AF AN AS EU NA OC SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContinentCode([u8; 2]);

fn two_letters(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

impl CountryCode {
    /// Two ASCII letters, any case.
    pub fn parse(s: &str) -> Option<Self> {
        two_letters(s).map(Self)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two letters, for tables that store codes compactly.
    pub(super) const fn raw(self) -> [u8; 2] {
        self.0
    }

    /// Letters from [`raw`](Self::raw).
    pub(super) const fn from_raw(letters: [u8; 2]) -> Self {
        Self(letters)
    }

    /// The continent this country is on, for the countries we know.
    pub fn continent(&self) -> Option<ContinentCode> {
        COUNTRIES_BY_CONTINENT
            .iter()
            .find(|(_, list)| list.split(' ').any(|c| c.as_bytes() == self.0))
            .map(|(cont, _)| ContinentCode(*cont))
    }
}

impl ContinentCode {
    /// One of AF AN AS EU NA OC SA, any case.
    pub fn parse(s: &str) -> Option<Self> {
        let code = two_letters(s)?;
        CONTINENT_CENTRES
            .iter()
            .any(|(c, _, _)| *c == code)
            .then_some(Self(code))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two letters, for tables that store codes compactly.
    pub(super) const fn raw(self) -> [u8; 2] {
        self.0
    }

    /// Letters from [`raw`](Self::raw).
    pub(super) const fn from_raw(letters: [u8; 2]) -> Self {
        Self(letters)
    }

    /// A representative point of the continent, for ranking regions by distance when only the
    /// country is known.
    pub fn centre(&self) -> (f64, f64) {
        CONTINENT_CENTRES
            .iter()
            .find(|(c, _, _)| *c == self.0)
            .map(|(_, lat, lon)| (*lat, *lon))
            .unwrap_or((0.0, 0.0))
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ContinentCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const CONTINENT_CENTRES: [([u8; 2], f64, f64); 7] = [
    (*b"AF", 2.0, 21.0),
    (*b"AN", -80.0, 0.0),
    (*b"AS", 34.0, 100.0),
    (*b"EU", 50.0, 10.0),
    (*b"NA", 40.0, -95.0),
    (*b"OC", -25.0, 140.0),
    (*b"SA", -15.0, -60.0),
];

/// MaxMind's continent for each country code.
const COUNTRIES_BY_CONTINENT: [([u8; 2], &str); 7] = [
    (
        *b"AF",
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA \
         MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    ),
    (*b"AN", "AQ BV GS HM TF"),
    (
        *b"AS",
        "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ LA LB \
         LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    ),
    (
        *b"EU",
        "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE \
         LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    ),
    (
        *b"NA",
        "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ MS MX \
         NI PA PM PR SV SX TC TT US VC VG VI",
    ),
    (
        *b"OC",
        "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV UM VU WF WS",
    ),
    (*b"SA", "AR BO BR CL CO EC FK GF GY PE PY SR UY VE"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_know_their_continent() {
        for (country, continent) in [("de", "EU"), ("US", "NA"), ("SG", "AS"), ("AU", "OC")] {
            let c = CountryCode::parse(country).unwrap();
            assert_eq!(c.continent().unwrap().as_str(), continent, "{country}");
        }
        assert!(CountryCode::parse("ZZ").unwrap().continent().is_none());
    }

    #[test]
    fn codes_are_validated() {
        assert!(CountryCode::parse("D").is_none());
        assert!(CountryCode::parse("D1").is_none());
        assert!(ContinentCode::parse("XX").is_none());
        assert_eq!(ContinentCode::parse("eu").unwrap().as_str(), "EU");
    }
}
