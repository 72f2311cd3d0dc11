//! The original schema's custom scalars: `JSONString`, `BigInt`, `DateTime`, `UUID`.

use juniper::{GraphQLScalar, InputValue, ScalarValue, Value};

/// A JSON document carried as a string (graphene's `JSONString`).
#[derive(Debug, Clone, GraphQLScalar)]
#[graphql(name = "JSONString", transparent)]
pub struct JsonString(pub String);

/// ISO-8601 date and time with offset.
#[derive(Debug, Clone, GraphQLScalar)]
#[graphql(name = "DateTime", transparent)]
pub struct DateTime(pub String);

impl DateTime {
    /// From the stored `…Z` text to the original's `isoformat()` shape.
    pub fn from_stored(s: &str) -> DateTime {
        match crate::signing::parse_date(s) {
            Some(d) => DateTime(
                d.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
                    .to_string(),
            ),
            None => DateTime(s.to_owned()),
        }
    }
}

#[derive(Debug, Clone, GraphQLScalar)]
#[graphql(name = "UUID", transparent)]
pub struct Uuid(pub String);

/// Integers up to ±2^53−1; as graphene, values beyond 32 bits are written as floats.
#[derive(Debug, Clone, Copy, GraphQLScalar)]
#[graphql(name = "BigInt", to_output_with = bigint_out, from_input_with = bigint_in, parse_token(i32, f64))]
pub struct BigInt(pub i64);

fn bigint_out<S: ScalarValue>(v: &BigInt) -> Value<S> {
    match i32::try_from(v.0) {
        Ok(small) => Value::scalar(small),
        Err(_) => Value::scalar(v.0 as f64),
    }
}

fn bigint_in<S: ScalarValue>(v: &InputValue<S>) -> Result<BigInt, String> {
    if let Some(i) = v.as_int_value() {
        return Ok(BigInt(i64::from(i)));
    }
    match v.as_float_value() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Ok(BigInt(f as i64)),
        _ => Err(format!("expected an integer, found {v}")),
    }
}
