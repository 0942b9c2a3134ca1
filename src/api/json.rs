//! Reading request bodies' JSON the way the OpenAPI document (JSON Schema)
//! describes it, where serde's defaults differ.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A request body that must be a JSON object (`web::Json<Object<T>>`).
/// serde's derived structs also read an array, as the fields in order, so
/// `["name", null, null, null]` made a watchlist; here anything but an
/// object is refused (422, like any other value of the wrong type).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::deserialize(d)?;
        T::deserialize(serde_json::Value::Object(map))
            .map(Object)
            .map_err(serde::de::Error::custom)
    }
}

/// An optional integer field: JSON has one kind of number, so `7.0` is the
/// integer 7 (JSON Schema's `integer`), where serde's `i64` takes only `7`.
/// A number with a fraction, or out of range, is still refused (422).
pub fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error, Unexpected};
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    // `i64::MAX as f64` is 2^63, itself out of range.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(Some(f as i64)),
        Some(f) => Err(D::Error::invalid_value(Unexpected::Float(f), &"an integer")),
        None => Err(D::Error::invalid_value(
            Unexpected::Other("a number out of range"),
            &"an i64",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Named {
        name: String,
        note: Option<String>,
    }

    #[test]
    fn objects_only() {
        let ok = serde_json::from_str::<Object<Named>>(r#"{"name": "n"}"#).unwrap();
        assert_eq!(ok.0.name, "n");
        for bad in [
            r#"["n", null]"#,
            "[]",
            "\"n\"",
            "5",
            "null",
            r#"{"name": 5}"#,
            r#"{"x": 1}"#,
        ] {
            let err = serde_json::from_str::<Object<Named>>(bad).unwrap_err();
            assert!(err.is_data(), "{bad}: {err}");
        }
        assert!(serde_json::from_str::<Object<Named>>("{")
            .unwrap_err()
            .is_eof());
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Id {
        #[serde(default, deserialize_with = "optional_integer")]
        id: Option<i64>,
    }

    fn read(json: &str) -> Result<Option<i64>, String> {
        serde_json::from_str::<Id>(json)
            .map(|i| i.id)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integers_however_written() {
        assert_eq!(read(r#"{"id": 7}"#), Ok(Some(7)));
        assert_eq!(read(r#"{"id": 7.0}"#), Ok(Some(7)));
        assert_eq!(read(r#"{"id": -7e0}"#), Ok(Some(-7)));
        assert_eq!(read(r#"{"id": null}"#), Ok(None));
        assert_eq!(read(r#"{}"#), Ok(None));
        assert_eq!(read(r#"{"id": -9223372036854775808}"#), Ok(Some(i64::MIN)));
    }

    #[test]
    fn not_integers() {
        for bad in [
            r#"{"id": 7.5}"#,
            r#"{"id": "7"}"#,
            r#"{"id": 9223372036854775808}"#,
            r#"{"id": 9223372036854775808.0}"#,
            r#"{"id": 1e300}"#,
        ] {
            let err = read(bad).unwrap_err();
            // A data error (422), not a syntax error (400).
            assert!(
                serde_json::from_str::<Id>(bad).unwrap_err().is_data(),
                "{bad}: {err}"
            );
        }
    }
}
