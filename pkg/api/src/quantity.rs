//! Resource quantities (`100m`, `1.5Gi`, `2e3`, `500Mi`): the one parser, formatter and
//! arithmetic used by the scheduler, the admission plugins (ResourceQuota, LimitRanger), the
//! ResourceQuota controller and the HPA.
//!
//! A [`Quantity`] is an exact integer number of **milli-units** held in an `i128`, plus the
//! format it was written in (decimal SI, binary SI or decimal exponent), which decides how it is
//! printed, as upstream's `resource.Quantity`. `i128` because the largest suffixes do not fit in
//! an `i64` of milli-units: `8Ei` bytes are 9.2·10²¹ milli-bytes (an `i64` ends at 9.2·10¹⁸),
//! while every quantity a cluster meets fits in `i128` with room to add many of them; the `i64`
//! accessors ([`Quantity::milli_i64`], [`Quantity::value`]) saturate.
//!
//! Precision: like upstream's `MilliValue()`, anything below one milli-unit (`250u`, `1n`,
//! `1e-6`) is rounded up (away from zero) to the next milli-unit, so `250u` is `1m`. Upstream
//! keeps nano precision internally; no resource k8slite computes with (cpu, memory, storage,
//! counts, extended resources) is meaningful below a milli-unit.
//!
//! Printing ([`Quantity::canonical`], `Display`) follows upstream's canonical form: binary
//! quantities of at least 1024 use the largest `Ki`…`Ei` suffix that keeps the number whole
//! (`1.5Gi` → `1536Mi`), decimal ones the largest power of 1000 (`2000` → `2k`, `1500m` stays
//! `1500m`, `1000m` → `1`), exponent ones an exponent that is a multiple of three (`1e3`).
//!
//! Why not the `kube_quantity` crate: its integer conversions (`to_bytes_i64` …) truncate
//! fractions (`1.5` → 1) and return `None` for milli quantities (`100m`), it has no
//! decimal-exponent format, and its `Display` prints the value as written (`1.5Gi`) rather than
//! upstream's canonical form that quota status and admission messages show.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How a quantity was written, which decides how it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Decimal SI suffixes (`m`, `k`, `M`, …) or none.
    #[default]
    DecimalSi,
    /// Binary SI suffixes (`Ki`, `Mi`, …).
    BinarySi,
    /// A decimal exponent (`1e3`, `5E-1`).
    DecimalExponent,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty input.
    #[error("quantity is empty")]
    Empty,
    /// The number part is missing or malformed.
    #[error("quantity {0:?} has no valid number")]
    Number(String),
    /// The suffix is not one of the known ones.
    #[error("quantity {0:?} has an unknown suffix")]
    Suffix(String),
    /// The value does not fit.
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

/// A resource quantity as an exact count of milli-units.
///
/// Equality and ordering compare values only (`1e3 == 1k == 1000`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantity {
    milli: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

/// Largest exponent of ten accepted in `e`/`E` notation (beyond it values overflow `i128`).
const MAX_EXP: i32 = 30;

/// `a / d` with the magnitude rounded up (upstream's `RoundUp`: away from zero).
fn div_away(a: i128, d: i128) -> i128 {
    let q = a / d;
    if a % d == 0 {
        q
    } else if a > 0 {
        q + 1
    } else {
        q - 1
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v > 0 { i64::MAX } else { i64::MIN })
}

impl Quantity {
    /// `milli` milli-units, decimal SI.
    pub fn from_milli(milli: i128) -> Self {
        Self {
            milli,
            format: Format::DecimalSi,
        }
    }

    /// A whole number of units (a count), decimal SI.
    pub fn from_units(n: i64) -> Self {
        Self::from_milli(i128::from(n) * 1000)
    }

    /// The same value printed in `format`.
    pub fn with_format(self, format: Format) -> Self {
        Self { format, ..self }
    }

    /// The format it prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Parse upstream's quantity syntax: `<sign><digits>[.<digits>]<suffix>` with suffix one of
    /// `n u m k M G T P E`, `Ki Mi Gi Ti Pi Ei`, `e<exp>`/`E<exp>` or none.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(QuantityError::Number(s.into()));
        }
        let overflow = || QuantityError::Overflow(s.into());
        // value = mantissa * mul * 10^exp10
        let (mul, exp10, format): (i128, i32, Format) = match suffix {
            "" => (1, 0, Format::DecimalSi),
            "n" => (1, -9, Format::DecimalSi),
            "u" => (1, -6, Format::DecimalSi),
            "m" => (1, -3, Format::DecimalSi),
            "k" => (1, 3, Format::DecimalSi),
            "M" => (1, 6, Format::DecimalSi),
            "G" => (1, 9, Format::DecimalSi),
            "T" => (1, 12, Format::DecimalSi),
            "P" => (1, 15, Format::DecimalSi),
            "E" => (1, 18, Format::DecimalSi),
            "Ki" => (1 << 10, 0, Format::BinarySi),
            "Mi" => (1 << 20, 0, Format::BinarySi),
            "Gi" => (1 << 30, 0, Format::BinarySi),
            "Ti" => (1 << 40, 0, Format::BinarySi),
            "Pi" => (1 << 50, 0, Format::BinarySi),
            "Ei" => (1 << 60, 0, Format::BinarySi),
            other => {
                let exp = other
                    .strip_prefix(['e', 'E'])
                    .filter(|e| !e.is_empty())
                    .and_then(|e| e.parse::<i32>().ok())
                    .ok_or_else(|| QuantityError::Suffix(s.into()))?;
                if exp > MAX_EXP {
                    return Err(overflow());
                }
                (1, exp, Format::DecimalExponent)
            }
        };
        let digits = format!("{int}{frac}");
        let mantissa: i128 = digits.parse().map_err(|_| overflow())?;
        let frac_len = i32::try_from(frac.len()).map_err(|_| overflow())?;
        // milli = mantissa * mul * 10^(exp10 - frac_len + 3)
        let scale = exp10.saturating_sub(frac_len).saturating_add(3);
        let base = mantissa.checked_mul(mul).ok_or_else(overflow)?;
        let milli = if scale >= 0 {
            let p = 10i128
                .checked_pow(scale.unsigned_abs())
                .ok_or_else(overflow)?;
            base.checked_mul(p).ok_or_else(overflow)?
        } else {
            match 10i128.checked_pow(scale.unsigned_abs()) {
                Some(d) => div_away(base, d),
                // smaller than any non-zero mantissa: rounds up to one milli-unit
                None => i128::from(base != 0),
            }
        };
        Ok(Self {
            milli: if negative { -milli } else { milli },
            format,
        })
    }

    /// Parse a k8s-openapi quantity.
    pub fn from_k8s(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<Self> {
        Self::parse(&q.0).ok()
    }

    /// Parse a JSON quantity (a string, or a bare number).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::String(s) => Self::parse(s).ok(),
            serde_json::Value::Number(n) => Self::parse(&n.to_string()).ok(),
            _ => None,
        }
    }

    /// The canonical form as a k8s-openapi quantity.
    pub fn to_k8s(&self) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
        k8s_openapi::apimachinery::pkg::api::resource::Quantity(self.canonical())
    }

    /// The exact value in milli-units.
    pub fn milli(&self) -> i128 {
        self.milli
    }

    /// The value in milli-units (millicores for cpu), saturating at the `i64` bounds.
    pub fn milli_i64(&self) -> i64 {
        saturate(self.milli)
    }

    /// The value in whole units (bytes, a count), rounded up like upstream's `Value()`,
    /// saturating at the `i64` bounds.
    pub fn value(&self) -> i64 {
        saturate(div_away(self.milli, 1000))
    }

    /// Whether this is zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// The value in units as a float (for ratios).
    pub fn as_f64(&self) -> f64 {
        self.milli as f64 / 1000.0
    }

    /// The canonical form upstream prints (see the module doc).
    pub fn canonical(&self) -> String {
        let m = self.milli;
        if m == 0 {
            return "0".into();
        }
        let sign = if m < 0 { "-" } else { "" };
        let a = m.unsigned_abs();
        // binary form only for whole values of at least 1024, like upstream
        if self.format == Format::BinarySi && a.is_multiple_of(1000) && a / 1000 >= 1024 {
            let mut units = a / 1000;
            let mut i = 0;
            while i < 6 && units.is_multiple_of(1024) {
                units /= 1024;
                i += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][i];
            return format!("{sign}{units}{suffix}");
        }
        // mantissa * 10^exp with exp a multiple of three, starting at milli
        let mut mantissa = a;
        let mut exp: i32 = -3;
        while exp < 18 && mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return match exp {
                0 => format!("{sign}{mantissa}"),
                e => format!("{sign}{mantissa}e{e}"),
            };
        }
        let suffix = match exp {
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Sum (saturating); printed in the left format, or the right one when the left is zero
/// (upstream's `Add`).
impl std::ops::Add for Quantity {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self {
            milli: self.milli.saturating_add(o.milli),
            format: if self.milli == 0 {
                o.format
            } else {
                self.format
            },
        }
    }
}

/// Difference (saturating), printed like [`Add`](std::ops::Add) does (upstream's `Sub`).
impl std::ops::Sub for Quantity {
    type Output = Self;

    fn sub(self, o: Self) -> Self {
        Self {
            milli: self.milli.saturating_sub(o.milli),
            format: if self.milli == 0 {
                o.format
            } else {
                self.format
            },
        }
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

impl std::ops::SubAssign for Quantity {
    fn sub_assign(&mut self, o: Self) {
        *self = *self - o;
    }
}

impl std::iter::Sum for Quantity {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<Quantity> for k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    fn from(q: Quantity) -> Self {
        q.to_k8s()
    }
}

/// A resource list (`requests`, `limits`, `overhead`) with parsed quantities.
pub type ResourceList = BTreeMap<String, Quantity>;

/// A pod's effective requests or limits as upstream computes them: the containers summed, each
/// init container as a floor per resource (it runs alone), plus the pod overhead.
pub fn pod_effective<'a>(
    containers: impl IntoIterator<Item = &'a ResourceList>,
    init_containers: impl IntoIterator<Item = &'a ResourceList>,
    overhead: Option<&ResourceList>,
) -> ResourceList {
    let mut total = ResourceList::new();
    for c in containers {
        for (k, v) in c {
            *total.entry(k.clone()).or_default() += *v;
        }
    }
    for c in init_containers {
        for (k, v) in c {
            let e = total.entry(k.clone()).or_default();
            if *v > *e {
                *e = *v;
            }
        }
    }
    for (k, v) in overhead.into_iter().flatten() {
        *total.entry(k.clone()).or_default() += *v;
    }
    total
}

/// What a pod's effective `requests` and `limits` charge against a ResourceQuota (upstream's
/// pod evaluator): `requests.<name>` for every requested resource, the bare `cpu`, `memory`
/// and `ephemeral-storage`, and `limits.<name>` for those three. The API server's quota
/// admission charges this and the quota controller recomputes `status.used` from it, so both
/// count with the same rules.
pub fn pod_quota_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    const STANDARD: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
    let mut u = ResourceList::new();
    for (k, v) in requests {
        if STANDARD.contains(&k.as_str()) {
            u.insert(k.clone(), *v);
        }
        u.insert(format!("requests.{k}"), *v);
    }
    for (k, v) in limits {
        if STANDARD.contains(&k.as_str()) {
            u.insert(format!("limits.{k}"), *v);
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    fn milli(s: &str) -> Option<i64> {
        Quantity::parse(s).ok().map(|q| q.milli_i64())
    }

    fn value(s: &str) -> Option<i64> {
        Quantity::parse(s).ok().map(|q| q.value())
    }

    // from the scheduler's former quantity module
    #[test]
    fn cpu_forms() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("250u"), Some(1), "rounded up like MilliValue");
        assert_eq!(milli("2e3"), Some(2_000_000));
        assert_eq!(milli("nonsense"), None);
        assert_eq!(milli(""), None);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("1.5Gi"), Some(1536 * 1024 * 1024));
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("500m"), Some(1), "fractions round up");
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("-1"), Some(-1));
        assert_eq!(value("1Xi"), None);
    }

    // from the HPA's former quantity_milli
    #[test]
    fn hpa_milli_values() {
        assert_eq!(milli("250m"), Some(250));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("1Ki"), Some(1_024_000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("10x"), None);
    }

    // from the admission plugins' former quantity module
    #[test]
    fn parse_and_print() {
        assert_eq!(q("500m").milli(), 500);
        assert_eq!(q("1").milli(), 1000);
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1Ki").milli(), 1024 * 1000);
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1.5Gi").canonical(), "1536Mi");
        assert_eq!(q("1000m").canonical(), "1");
        assert_eq!(q("1500m").canonical(), "1500m");
        assert_eq!(q("2000").canonical(), "2k");
        assert_eq!((q("128Mi") + q("128Mi")).canonical(), "256Mi");
        assert_eq!((q("500m") + q("500m")).canonical(), "1");
        assert!(q("2") > q("1900m"));
        assert_eq!(q("-1").canonical(), "-1");
        for bad in ["", "abc", "1.2.3", "5Xi", "m", ".", "1e", "1K", "e3"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_canonical_forms() {
        // binary below 1024 and fractional binary print as decimal, like upstream
        assert_eq!(q("0.5Ki").canonical(), "512");
        assert_eq!(q("1000Mi").canonical(), "1000Mi");
        assert_eq!(q("1024Mi").canonical(), "1Gi");
        assert_eq!(q("1.5Ki").canonical(), "1536");
        assert_eq!(q("1e3").canonical(), "1e3");
        assert_eq!(q("1.5e3").canonical(), "1500");
        assert_eq!(q("100m").canonical(), "100m");
        assert_eq!(q("0.1").canonical(), "100m");
        assert_eq!(q("1M").canonical(), "1M");
        assert_eq!(q("1000k").canonical(), "1M");
        assert_eq!(q("2E").canonical(), "2E");
        assert_eq!(q("8Ei").canonical(), "8Ei");
        assert_eq!(q("250u").canonical(), "1m");
        assert_eq!(q("-250u").milli(), -1, "rounded away from zero");
        assert_eq!(q("1e-30").milli(), 1);
        assert_eq!(q("+5").milli(), 5000);
        assert_eq!(q(".5").milli(), 500);
        assert!(matches!(
            Quantity::parse("1e99"),
            Err(QuantityError::Overflow(_))
        ));
        // zero takes the other operand's format
        assert_eq!((Quantity::default() + q("1Gi")).canonical(), "1Gi");
        assert_eq!((q("3Gi") - q("1Gi")).canonical(), "2Gi");
        assert_eq!(q("8Ei").value(), i64::MAX, "saturates");
        assert_eq!(
            Quantity::from_json(&serde_json::json!(2)).map(|q| q.milli()),
            Some(2000)
        );
    }

    #[test]
    fn pod_effective_and_quota_usage() {
        let list = |items: &[(&str, &str)]| -> ResourceList {
            items.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
        };
        let containers = [
            list(&[("cpu", "250m"), ("memory", "64Mi")]),
            list(&[("cpu", "250m"), ("nvidia.com/gpu", "1")]),
        ];
        let init = [list(&[("cpu", "1")]), list(&[("memory", "32Mi")])];
        let overhead = list(&[("cpu", "10m")]);
        let eff = pod_effective(&containers, &init, Some(&overhead));
        assert_eq!(
            eff["cpu"],
            q("1010m"),
            "init container floor, then overhead"
        );
        assert_eq!(eff["memory"].canonical(), "64Mi");
        assert_eq!(eff["nvidia.com/gpu"], q("1"));
        let limits = list(&[("cpu", "2"), ("nvidia.com/gpu", "1")]);
        let u = pod_quota_usage(&eff, &limits);
        let keys: Vec<&str> = u.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cpu",
                "limits.cpu",
                "memory",
                "requests.cpu",
                "requests.memory",
                "requests.nvidia.com/gpu"
            ]
        );
        assert_eq!(u["limits.cpu"], q("2"));
    }

    fn any_format() -> impl Strategy<Value = Format> {
        prop_oneof![
            Just(Format::DecimalSi),
            Just(Format::BinarySi),
            Just(Format::DecimalExponent)
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            m in -(1i128 << 90)..(1i128 << 90),
            f in any_format(),
        ) {
            let x = Quantity::from_milli(m).with_format(f);
            let back = Quantity::parse(&x.canonical()).expect("canonical form parses");
            prop_assert_eq!(back.milli(), m);
            prop_assert_eq!(back.canonical(), x.canonical());
        }

        #[test]
        fn written_forms_round_trip(n in 0i64..1_000_000, s in prop::sample::select(
            vec!["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "e3", "e-3"]
        )) {
            let x = q(&format!("{n}{s}"));
            prop_assert_eq!(q(&x.canonical()), x);
        }

        #[test]
        fn add_sub_are_exact(a in -(1i128 << 80)..(1i128 << 80), b in -(1i128 << 80)..(1i128 << 80)) {
            let (x, y) = (Quantity::from_milli(a), Quantity::from_milli(b));
            prop_assert_eq!(x + y - y, x);
            prop_assert_eq!((x + y).milli(), a + b);
            prop_assert_eq!([x, y].into_iter().sum::<Quantity>(), x + y);
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }
    }
}
