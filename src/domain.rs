//! Validated domain types. Everything that crosses an edge (HTTP body, path,
//! query, CLI argument) is parsed into one of these first, so handlers and the
//! database layer only ever see values that are already valid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was rejected; the message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DomainError {
    pub field: &'static str,
    pub message: String,
}

impl DomainError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Text of at least one and at most `max` characters.
fn not_empty_within(field: &'static str, text: &str, max: usize) -> Result<(), DomainError> {
    if text.is_empty() {
        return Err(DomainError::new(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(DomainError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// `as_str` and the `String` conversions serde goes through, for a newtype
/// over text (a `String`, or with `shared`, an `Arc<str>`) that `parse`
/// checks.
macro_rules! string_conversions {
    ($name:ident) => {
        string_conversions!(@common $name);

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
    ($name:ident, shared) => {
        string_conversions!(@common $name);

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }
    };
    (@common $name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
    };
}

/// A ticker symbol: 1-20 characters of `A-Z 0-9 . - ^ =`, always upper-case.
///
/// Shared, not copied: every round, cache, worker and set of wanted symbols
/// holds the same few symbols, cloned many times a tick, and a clone of a
/// `String` was an allocation each time (docs/BENCHMARKS.md, cpu).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(std::sync::Arc<str>);

impl Symbol {
    pub const MAX_LEN: usize = 20;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let upper = raw.trim().to_ascii_uppercase();
        not_empty_within("symbol", &upper, Self::MAX_LEN)?;
        if let Some(bad) = upper
            .chars()
            .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || ".-^=".contains(*c)))
        {
            return Err(DomainError::new(
                "symbol",
                format!("invalid character {bad:?}; allowed are A-Z 0-9 . - ^ ="),
            ));
        }
        Ok(Self(upper.into()))
    }
}

string_conversions!(Symbol, shared);

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A watchlist name: 1-100 characters (Unicode scalar values) after trimming,
/// no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WatchlistName(String);

impl WatchlistName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let name = raw.trim();
        not_empty_within("name", name, Self::MAX_LEN)?;
        if name.chars().any(char::is_control) {
            return Err(DomainError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }
}

string_conversions!(WatchlistName);

/// Free text with a length cap (descriptions, memos).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedText<const MAX: usize>(String);

impl<const MAX: usize> BoundedText<MAX> {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, DomainError> {
        if raw.chars().count() > MAX {
            return Err(DomainError::new(
                field,
                format!("must be at most {MAX} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

pub type Description = BoundedText<1000>;
pub type Memo = BoundedText<500>;

/// A non-negative, finite amount: used for quantities and prices.
fn non_negative(field: &'static str, value: f64) -> Result<f64, DomainError> {
    if !value.is_finite() {
        return Err(DomainError::new(field, "must be a finite number"));
    }
    if value < 0.0 {
        return Err(DomainError::new(field, "must not be negative"));
    }
    // 1e15 keeps products (quantity * price) well inside f64's exact range.
    if value > 1e15 {
        return Err(DomainError::new(field, "is too large"));
    }
    // -0.0 passes the checks above but would be stored and echoed to clients
    // as "-0.0"; adding +0.0 turns it into 0.0 and changes no other value.
    Ok(value + 0.0)
}

/// Number of shares held (fractional shares allowed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantity(f64);

impl Quantity {
    pub fn parse(value: f64) -> Result<Self, DomainError> {
        non_negative("quantity", value).map(Self)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Price paid per share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price(f64);

impl Price {
    pub fn parse(value: f64) -> Result<Self, DomainError> {
        non_negative("purchase_price", value).map(Self)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(Symbol::parse("7203.t").unwrap().as_str(), "7203.T");
        assert_eq!(Symbol::parse(" aapl ").unwrap().as_str(), "AAPL");
        assert_eq!(Symbol::parse("^N225").unwrap().as_str(), "^N225");
        assert_eq!(Symbol::parse("USDJPY=X").unwrap().as_str(), "USDJPY=X");
        assert_eq!(Symbol::parse("BRK-B").unwrap().as_str(), "BRK-B");
        assert!(Symbol::parse("").is_err());
        assert!(Symbol::parse("A B").is_err());
        assert!(Symbol::parse("AAPL;DROP").is_err());
        assert!(Symbol::parse("トヨタ").is_err());
        assert!(Symbol::parse(&"A".repeat(21)).is_err());
        assert!(Symbol::parse(&"A".repeat(20)).is_ok());
    }

    #[test]
    fn names_count_characters_not_bytes() {
        assert!(WatchlistName::parse(&"株".repeat(100)).is_ok());
        assert!(WatchlistName::parse(&"株".repeat(101)).is_err());
        assert!(WatchlistName::parse("   ").is_err());
        assert!(WatchlistName::parse("a\u{0}b").is_err());
        assert_eq!(
            WatchlistName::parse("  日本株 ").unwrap().as_str(),
            "日本株"
        );
    }

    #[test]
    fn amounts_must_be_finite_and_non_negative() {
        assert!(Quantity::parse(100.0).is_ok());
        assert!(Quantity::parse(0.5).is_ok());
        assert!(Quantity::parse(-1.0).is_err());
        assert!(Quantity::parse(f64::NAN).is_err());
        assert!(Price::parse(f64::INFINITY).is_err());
        assert!(Price::parse(1e16).is_err());
    }

    #[test]
    fn negative_zero_is_stored_as_zero() {
        // Found by tests/properties.rs: `"quantity": -0` came back as -0.0.
        let quantity = Quantity::parse(-0.0).unwrap().get();
        assert!(quantity == 0.0 && quantity.is_sign_positive());
        let price = Price::parse(-0.0).unwrap().get();
        assert!(price == 0.0 && price.is_sign_positive());
        assert_eq!(
            serde_json::to_string(&Quantity::parse(-0.0).unwrap()).unwrap(),
            "0.0"
        );
    }
}
