//! Resource slots: `{slot name: decimal quantity}` (e.g. `cpu`, `mem` in bytes, `cuda.device`).
//!
//! Quantities are decimals, never floats. On the wire and in the database they are decimal
//! strings (`{"cpu": "1", "mem": "2147483648"}`); on input, numbers and the legacy binary-size
//! strings of `mem` (`"1g"`, `"512m"`) are accepted too.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("slot '{slot}': '{value}' is not a decimal quantity")]
    BadQuantity { slot: String, value: String },
    #[error("slot '{slot}': quantity must not be negative")]
    Negative { slot: String },
    #[error("slot names must be non-empty and contain only letters, digits, '.', '_' or '-'")]
    BadName,
    #[error("resource slots must be a JSON object of slot name to quantity")]
    NotAnObject,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResourceSlots(BTreeMap<String, Decimal>);

fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses `"2g"`, `"512m"`, `"1.5k"` (powers of 1024, as the original's `BinarySize`).
fn parse_binary_size(s: &str) -> Option<Decimal> {
    let lower = s.trim().to_ascii_lowercase();
    let trimmed = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, exp) = match trimmed.chars().last()? {
        'k' => (&trimmed[..trimmed.len() - 1], 1),
        'm' => (&trimmed[..trimmed.len() - 1], 2),
        'g' => (&trimmed[..trimmed.len() - 1], 3),
        't' => (&trimmed[..trimmed.len() - 1], 4),
        'p' => (&trimmed[..trimmed.len() - 1], 5),
        _ => return None,
    };
    let base = Decimal::from_str(num.trim()).ok()?;
    let mut factor = Decimal::ONE;
    for _ in 0..exp {
        factor *= Decimal::from(1024);
    }
    base.checked_mul(factor).map(|d| d.trunc())
}

/// `4g`, `512m`, or the plain number when no binary unit divides it.
pub fn humanize_bytes(v: Decimal) -> String {
    let k = Decimal::from(1024);
    let mut n = v.trunc();
    if n != v || n.is_zero() {
        return v.to_string();
    }
    for unit in ["", "k", "m", "g", "t", "p"] {
        if n % k != Decimal::ZERO || unit == "p" {
            return format!("{n}{unit}");
        }
        n /= k;
    }
    v.to_string()
}

impl ResourceSlots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses one quantity as given on the wire for `slot`.
    pub fn parse_quantity(slot: &str, value: &serde_json::Value) -> Result<Decimal, SlotError> {
        let bad = || SlotError::BadQuantity {
            slot: slot.to_owned(),
            value: value.to_string(),
        };
        let d = match value {
            serde_json::Value::Number(n) => Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_err(|_| bad())?,
            serde_json::Value::String(s) => match Decimal::from_str(s.trim()) {
                Ok(d) => d,
                Err(_) if slot == "mem" => parse_binary_size(s).ok_or_else(bad)?,
                Err(_) => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        if d.is_sign_negative() && !d.is_zero() {
            return Err(SlotError::Negative {
                slot: slot.to_owned(),
            });
        }
        Ok(d.normalize())
    }

    pub fn from_json(value: &serde_json::Value) -> Result<Self, SlotError> {
        let obj = value.as_object().ok_or(SlotError::NotAnObject)?;
        let mut slots = BTreeMap::new();
        for (k, v) in obj {
            if !valid_slot_name(k) {
                return Err(SlotError::BadName);
            }
            slots.insert(k.clone(), Self::parse_quantity(k, v)?);
        }
        Ok(ResourceSlots(slots))
    }

    /// Parses `(slot name, quantity text)` pairs (the agent RPC's map) by the rules of
    /// [`from_json`](Self::from_json).
    pub fn from_texts<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, SlotError> {
        let mut slots = BTreeMap::new();
        for (k, v) in pairs {
            if !valid_slot_name(k) {
                return Err(SlotError::BadName);
            }
            let q = Self::parse_quantity(k, &serde_json::Value::String(v.to_owned()))?;
            slots.insert(k.to_owned(), q);
        }
        Ok(ResourceSlots(slots))
    }

    /// `(slot name, quantity text)` pairs, the texts as [`to_json`](Self::to_json) writes them.
    pub fn to_texts(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.0.iter().map(|(k, v)| (k.clone(), v.to_string()))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string())))
                .collect(),
        )
    }

    pub fn get(&self, slot: &str) -> Decimal {
        self.0.get(slot).copied().unwrap_or(Decimal::ZERO)
    }

    /// The quantity of `slot` when it is present.
    pub fn get_opt(&self, slot: &str) -> Option<Decimal> {
        self.0.get(slot).copied()
    }

    /// `cpu=2, mem=4g` (memory in binary units where exact), for messages.
    pub fn humanize(&self) -> String {
        self.iter()
            .map(|(k, v)| {
                if k == "mem" {
                    format!("{k}={}", humanize_bytes(v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `limit` bounds any slot these (requested) slots ask for, so that what is
    /// in use needs counting at all. `unspecified` is the limit of slots `limit` does not
    /// name (`None` = no limit).
    pub fn bounded_by(&self, limit: &ResourceSlots, unspecified: Option<Decimal>) -> bool {
        self.iter().any(|(slot, want)| {
            want > Decimal::ZERO && limit.get_opt(slot).or(unspecified).is_some()
        })
    }

    /// Whether these (requested) slots, added to `used`, go over `limit` in any slot.
    /// `unspecified` is as for [`ResourceSlots::bounded_by`].
    pub fn exceeds(
        &self,
        used: &ResourceSlots,
        limit: &ResourceSlots,
        unspecified: Option<Decimal>,
    ) -> bool {
        self.iter()
            .any(|(slot, want)| match limit.get_opt(slot).or(unspecified) {
                Some(max) => want > Decimal::ZERO && used.get(slot) + want > max,
                None => false,
            })
    }

    /// Negative quantities (from releasing more than was recorded) become zero.
    pub fn clamp_negative(mut self) -> ResourceSlots {
        for v in self.0.values_mut() {
            if v.is_sign_negative() {
                *v = Decimal::ZERO;
            }
        }
        self
    }

    pub fn set(&mut self, slot: impl Into<String>, qty: Decimal) {
        self.0.insert(slot.into(), qty);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Decimal)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Slot-wise sum; slots missing on one side count as zero.
    pub fn add(&self, other: &ResourceSlots) -> ResourceSlots {
        let mut out = self.clone();
        for (k, v) in other.iter() {
            out.set(k, out.get(k) + v);
        }
        out
    }

    /// Slot-wise difference; slots missing on one side count as zero.
    pub fn sub(&self, other: &ResourceSlots) -> ResourceSlots {
        let mut out = self.clone();
        for (k, v) in other.iter() {
            out.set(k, out.get(k) - v);
        }
        out
    }

    /// True when every slot of `self` is at most the same slot of `limit` (missing = zero).
    pub fn fits_in(&self, limit: &ResourceSlots) -> bool {
        self.iter().all(|(k, v)| v <= limit.get(k))
    }
}

impl<'de> Deserialize<'de> for ResourceSlots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        ResourceSlots::from_json(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slots(v: serde_json::Value) -> ResourceSlots {
        ResourceSlots::from_json(&v).unwrap()
    }

    #[test]
    fn limits_count_what_is_already_used() {
        let used = slots(json!({"cpu": 3}));
        let limit = slots(json!({"cpu": 4}));
        assert!(!slots(json!({"cpu": 1})).exceeds(&used, &limit, None));
        assert!(slots(json!({"cpu": 2})).exceeds(&used, &limit, None));
        // An unnamed slot: limited to zero under LIMITED, free under UNLIMITED.
        let req = slots(json!({"cpu": 1, "mem": "1g"}));
        assert!(req.exceeds(&used, &limit, Some(Decimal::ZERO)));
        assert!(!req.exceeds(&used, &limit, None));
        // Asking for none of a slot never goes over.
        let req = slots(json!({"cpu": 1, "cuda.device": 0}));
        assert!(!req.exceeds(&used, &limit, Some(Decimal::ZERO)));
        assert!(req.bounded_by(&limit, None));
        assert!(!slots(json!({"mem": "1g"})).bounded_by(&limit, None));
    }

    #[test]
    fn parses_strings_numbers_and_legacy_memory_sizes() {
        let s = slots(json!({"cpu": 1.5, "mem": "1g", "cuda.shares": "0.30"}));
        assert_eq!(s.get("cpu").to_string(), "1.5");
        assert_eq!(s.get("mem").to_string(), "1073741824");
        assert_eq!(
            s.to_json(),
            json!({"cpu": "1.5", "cuda.shares": "0.3", "mem": "1073741824"})
        );
    }

    #[test]
    fn rejects_garbage_and_negative_quantities() {
        assert!(matches!(
            ResourceSlots::from_json(&json!({"cpu": "lots"})),
            Err(SlotError::BadQuantity { .. })
        ));
        assert!(matches!(
            ResourceSlots::from_json(&json!({"cpu": -1})),
            Err(SlotError::Negative { .. })
        ));
        assert_eq!(
            ResourceSlots::from_json(&json!([1])),
            Err(SlotError::NotAnObject)
        );
        assert_eq!(
            ResourceSlots::from_json(&json!({"a b": 1})),
            Err(SlotError::BadName)
        );
    }

    #[test]
    fn humanized_for_messages() {
        let s = slots(json!({"cpu": "2", "mem": "4g", "cuda.shares": "0.5"}));
        assert_eq!(s.humanize(), "cpu=2, cuda.shares=0.5, mem=4g");
        assert_eq!(humanize_bytes(Decimal::from(1536)), "1536");
        assert_eq!(humanize_bytes(Decimal::from(268435456)), "256m");
        assert_eq!(humanize_bytes(Decimal::ZERO), "0");
    }

    #[test]
    fn arithmetic_is_exact() {
        let a = slots(json!({"cuda.shares": "0.1", "cpu": "1"}));
        let b = slots(json!({"cuda.shares": "0.2"}));
        let sum = a.add(&b);
        assert_eq!(sum.get("cuda.shares").to_string(), "0.3");
        assert!(sum.fits_in(&slots(json!({"cpu": 1, "cuda.shares": "0.3"}))));
        assert!(!sum.fits_in(&slots(json!({"cpu": 1}))));
        assert_eq!(
            sum.sub(&a),
            slots(json!({"cpu": "0", "cuda.shares": "0.2"}))
        );
    }
}
