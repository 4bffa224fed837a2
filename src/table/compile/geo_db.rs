//! Compiling `geo.database` and `geo.fields`: parse the field paths, open one file (every
//! client) or two (IPv4 clients, then IPv6 clients), reusing the table in service's copy of a
//! file that has not changed. Used by the geo resolver's compile in `regions`.

use super::*;
use crate::geo::{FieldMap, FieldPath};

/// The opened databases: the main one, and the IPv6 one when two files are named.
pub(super) type OpenedDatabases = (Option<Arc<GeoDb>>, Option<Arc<GeoDb>>);

impl<'a> Compiler<'a> {
    /// `geo.fields`, parsed; problems name the field.
    fn geo_fields(&mut self) -> Option<FieldMap> {
        let fields = self.config.geo.fields.as_ref()?;
        let at = root().key("geo").key("fields");
        let mut parse = |name: &str, text: &Option<String>| {
            let text = text.as_deref()?;
            FieldPath::parse(text)
                .map_err(|e| self.problems.at(at.key(name), e))
                .ok()
        };
        let map = FieldMap {
            country: parse("country", &fields.country),
            continent: parse("continent", &fields.continent),
            latitude: parse("latitude", &fields.latitude),
            longitude: parse("longitude", &fields.longitude),
        };
        if fields.latitude.is_some() != fields.longitude.is_some() {
            self.problems.at(
                at.clone(),
                "latitude and longitude go together: give both or neither",
            );
        }
        if fields.country.is_none() && fields.continent.is_none() && fields.latitude.is_none() {
            self.problems.at(
                at,
                "name at least one of country, continent, or latitude and longitude",
            );
        }
        Some(map)
    }

    pub(super) fn geo_databases(&mut self) -> OpenedDatabases {
        let fields = self.geo_fields();
        let Some(files) = self.config.geo.database.clone() else {
            if fields.is_some() {
                self.problems.at(
                    root().key("geo").key("fields"),
                    "geo.fields describes geo.database's records: set geo.database too",
                );
            }
            return (None, None);
        };
        let at = root().key("geo").key("database");
        let paths = files.paths();
        if paths.is_empty() || paths.len() > 2 {
            self.problems.at(
                at,
                "give one file, or two: the IPv4 file, then the IPv6 file",
            );
            return (None, None);
        }
        let here = |i: usize| {
            if paths.len() == 1 {
                at.clone()
            } else {
                at.index(i)
            }
        };
        let mut opened = Vec::with_capacity(2);
        for (i, path) in paths.iter().enumerate() {
            let db = match self.current_database(path, fields.as_ref()) {
                Some(db) => Some(db),
                None => match GeoDb::open_with(path, fields.as_ref()) {
                    Ok(db) => Some(Arc::new(db)),
                    Err(e) => {
                        self.problems.at(here(i), e.to_string());
                        None
                    }
                },
            };
            opened.push(db);
        }
        let v6 = opened.pop().flatten();
        if paths.len() == 1 {
            return (v6, None);
        }
        let v4 = opened.pop().flatten();
        if let Some(db) = &v6
            && db.ip_version() == 4
        {
            self.problems.at(
                here(1),
                format!(
                    "{} holds IPv4 networks only; the second file answers IPv6 clients",
                    db.path().display()
                ),
            );
        }
        (v4, v6)
    }

    /// The previous table's database, if it was read from this very file with these fields.
    fn current_database(&self, path: &Path, fields: Option<&FieldMap>) -> Option<Arc<GeoDb>> {
        let previous = self.previous.map(|t| &t.geo)?;
        [&previous.database, &previous.database_v6]
            .into_iter()
            .flatten()
            .find(|db| db.is_current(path, fields))
            .cloned()
    }
}
