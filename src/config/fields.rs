//! Which fields the config model accepts at a place in a document, so an unknown field can be
//! answered with the nearest valid one ("did you mean `weights`?").
//!
//! Used by the YAML loader ([`super::yaml::parse_document`]) only once a document has unknown
//! fields: it deserializes the document a second time through [`fields_at`], a deserializer
//! over the parsed value that notes the field list serde passes for each struct at the places
//! asked about. A valid config never takes this path.
//!
//! Structs read through a hand-written `Deserialize` (an endpoint's `{ address, weight }`, an
//! untagged or tagged enum's content) are not seen; their unknown fields get no suggestion.

use std::collections::{HashMap, HashSet};

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use super::yaml::YamlPath;

/// The fields the model accepts where each unknown field (a path in `text`'s document) was
/// found, for suggestions. Only runs when there are unknown fields.
pub fn accepted_fields<T: DeserializeOwned>(
    text: &str,
    unknown: &[YamlPath],
) -> HashMap<YamlPath, &'static [&'static str]> {
    if unknown.is_empty() {
        return HashMap::new();
    }
    let Some(value) = super::yaml::reparse(text) else {
        return HashMap::new();
    };
    let parents: Vec<YamlPath> = unknown
        .iter()
        .map(|p| YamlPath(p.0[..p.0.len().saturating_sub(1)].to_vec()))
        .collect();
    fields_at::<T>(value, &parents)
}

/// The accepted field names of the structs at `places` (each the path of a mapping), as far as
/// deserializing `value` as `T` reaches them.
pub fn fields_at<T: DeserializeOwned>(
    value: Value,
    places: &[YamlPath],
) -> HashMap<YamlPath, &'static [&'static str]> {
    let mut found = HashMap::new();
    let mut wanted = Wanted::default();
    for place in places {
        wanted.exact.insert(place.clone());
        for end in 0..=place.0.len() {
            wanted.on_the_way.insert(YamlPath(place.0[..end].to_vec()));
        }
    }
    let recorder = Recorder {
        value,
        path: YamlPath::root(),
        places: &wanted,
        found: &mut found,
    };
    // Whatever the result: a type error after the places were passed changes nothing found.
    let _ = T::deserialize(recorder);
    found
}

/// The places asked about, and every place on the way to one, so each node of a document
/// is looked up once however many places there are.
#[derive(Default)]
struct Wanted {
    exact: HashSet<YamlPath>,
    on_the_way: HashSet<YamlPath>,
}

struct Recorder<'a, 'f> {
    value: Value,
    path: YamlPath,
    places: &'a Wanted,
    found: &'f mut HashMap<YamlPath, &'static [&'static str]>,
}

impl<'a, 'f> Recorder<'a, 'f> {
    /// Whether some place asked about lies at or below this one (the rest of the document
    /// goes to serde_json's own deserializer, without paths).
    fn leads_somewhere(&self) -> bool {
        self.places.on_the_way.contains(&self.path)
    }

    fn visit_container<'de, V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        if !self.leads_somewhere() {
            return de::Deserializer::deserialize_any(self.value, visitor);
        }
        match self.value {
            Value::Object(map) => visitor.visit_map(Entries {
                entries: map.into_iter(),
                pending: None,
                path: self.path,
                places: self.places,
                found: self.found,
            }),
            Value::Array(items) => {
                let mut seq = Items {
                    items: items.into_iter().enumerate(),
                    path: self.path,
                    places: self.places,
                    found: self.found,
                };
                let value = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(value),
                    left => Err(de::Error::custom(format!("{left} items too many"))),
                }
            }
            other => de::Deserializer::deserialize_any(other, visitor),
        }
    }
}

macro_rules! forward_to_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                de::Deserializer::$method(self.value, visitor)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Recorder<'_, '_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.visit_container(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.places.exact.contains(&self.path) {
            self.found.insert(self.path.clone(), fields);
        }
        if self.value.is_object() {
            self.visit_container(visitor)
        } else {
            de::Deserializer::deserialize_struct(self.value, name, fields, visitor)
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.value.is_object() {
            self.visit_container(visitor)
        } else {
            de::Deserializer::deserialize_map(self.value, visitor)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.value.is_array() {
            self.visit_container(visitor)
        } else {
            de::Deserializer::deserialize_seq(self.value, visitor)
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_enum(self.value, name, variants, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_tuple(self.value, len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_tuple_struct(self.value, name, len, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_unit_struct(self.value, name, visitor)
    }

    forward_to_value! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any
    }
}

struct Entries<'a, 'f> {
    entries: serde_json::map::IntoIter,
    pending: Option<(String, Value)>,
    path: YamlPath,
    places: &'a Wanted,
    found: &'f mut HashMap<YamlPath, &'static [&'static str]>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let deserializer: de::value::StringDeserializer<serde_json::Error> =
            key.clone().into_deserializer();
        self.pending = Some((key, value));
        seed.deserialize(deserializer).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value asked for before its key"));
        };
        seed.deserialize(Recorder {
            value,
            path: self.path.key(key),
            places: self.places,
            found: self.found,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Items<'a, 'f> {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    path: YamlPath,
    places: &'a Wanted,
    found: &'f mut HashMap<YamlPath, &'static [&'static str]>,
}

impl<'de> SeqAccess<'de> for &mut Items<'_, '_> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(Recorder {
            value,
            path: self.path.index(index),
            places: self.places,
            found: self.found,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
        colour: Option<String>,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        weights: Option<u32>,
        mode: Option<String>,
    }

    fn path(segments: &[&str]) -> YamlPath {
        let mut p = YamlPath::root();
        for s in segments {
            p = match s.parse::<usize>() {
                Ok(i) => p.index(i),
                Err(_) => p.key(*s),
            };
        }
        p
    }

    #[test]
    fn finds_the_fields_of_each_place_asked_about() {
        let value = serde_json::json!({
            "name": "a",
            "items": [{ "size": 1 }, { "size": 2, "colr": "red" }],
            "inner": { "wieghts": 3 },
        });
        let places = [
            path(&[]),
            path(&["items", "1"]),
            path(&["inner"]),
            path(&["nowhere"]),
        ];
        let found = fields_at::<Doc>(value, &places);
        assert_eq!(
            found.get(&places[0]).copied(),
            Some(&["name", "items", "inner"][..])
        );
        assert_eq!(
            found.get(&places[1]).copied(),
            Some(&["size", "colour"][..])
        );
        assert_eq!(
            found.get(&places[2]).copied(),
            Some(&["weights", "mode"][..])
        );
        assert_eq!(found.get(&places[3]), None);
    }

    #[test]
    fn a_type_error_elsewhere_keeps_what_was_found() {
        let value = serde_json::json!({ "name": 5, "inner": { "mdoe": "x" } });
        let places = [path(&["inner"])];
        // `name` fails first: serde stops there, so `inner` is never reached, and nothing
        // is made up for it.
        let found = fields_at::<Doc>(value, &places);
        assert!(found.is_empty(), "{found:?}");
    }
}
