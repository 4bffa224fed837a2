//! Values back to block-style YAML text, quoting any string a plain scalar would misread; used
//! by `meridian import` to write the config it builds.

use serde_json::Value;

/// Write a value as block-style YAML; strings are quoted whenever a plain scalar could be read
/// back as something else.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                out.push_str(&format!(
                    "{pad}{}:",
                    scalar_text(&Value::String(key.clone()))
                ));
                write_child(v, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // "- key: value" then the rest of the mapping aligned under it
                        let mut first = true;
                        for (key, v) in map {
                            let lead = if first {
                                format!("{pad}- ")
                            } else {
                                format!("{pad}  ")
                            };
                            first = false;
                            out.push_str(&format!(
                                "{lead}{}:",
                                scalar_text(&Value::String(key.clone()))
                            ));
                            write_child(v, indent + 2, out);
                        }
                    }
                    other => {
                        out.push_str(&format!("{pad}-"));
                        write_child(other, indent, out);
                    }
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", scalar_text(scalar))),
    }
}

fn write_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar => out.push_str(&format!(" {}\n", scalar_text(scalar))),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
                && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
            }
        }
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse_values;

    #[test]
    fn yaml_written_reads_back_the_same() {
        let value = serde_json::json!({
            "a": "plain", "b": "needs: quoting", "c": "true", "d": 3, "e": 1.5, "f": null,
            "list": ["x", {"k": "v", "m": [1, 2]}, []], "empty": {}, "x": "127.0.0.1:80",
        });
        let text = to_yaml(&value);
        let back = parse_values(&text).unwrap();
        assert_eq!(back, vec![value], "{text}");
    }
}
