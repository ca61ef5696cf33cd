//! Resource quantities (`500m`, `1Gi`, `2`, `1e3`) as exact integers of nano-units, enough to
//! add, compare and print them back the way upstream's `resource.Quantity` does.

use std::cmp::Ordering;

/// A parsed quantity: an exact count of 10⁻⁹ units, and whether it was written with a binary
/// suffix (`Ki`, `Mi`, …), which decides how sums are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Quantity {
    /// Value in nano-units (rounded up, like upstream's scaled values).
    pub nanos: i128,
    /// Written with a binary suffix.
    pub binary: bool,
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// A whole number of units.
    pub fn from_units(n: i64) -> Self {
        Self {
            nanos: i128::from(n) * NANO,
            binary: false,
        }
    }

    /// Parse the Kubernetes quantity syntax; `None` when it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let (sign, body) = match s.as_bytes()[0] {
            b'-' => (-1i128, &s[1..]),
            b'+' => (1, &s[1..]),
            _ => (1, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (num, suffix) = body.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        // (multiplier numerator, exponent of ten) of the suffix, and whether it is binary.
        let (mul, exp10, binary): (i128, i32, bool) = match suffix {
            "" => (1, 0, false),
            "n" => (1, -9, false),
            "u" => (1, -6, false),
            "m" => (1, -3, false),
            "k" => (1, 3, false),
            "M" => (1, 6, false),
            "G" => (1, 9, false),
            "T" => (1, 12, false),
            "P" => (1, 15, false),
            "E" => (1, 18, false),
            "Ki" => (1 << 10, 0, true),
            "Mi" => (1 << 20, 0, true),
            "Gi" => (1 << 30, 0, true),
            "Ti" => (1 << 40, 0, true),
            "Pi" => (1 << 50, 0, true),
            "Ei" => (1 << 60, 0, true),
            other => {
                let e = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))?;
                (1, e.parse::<i32>().ok()?, false)
            }
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let digits = format!("{int_part}{frac_part}");
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        // value = mantissa * 10^(exp10 - frac_len) * mul; in nanos: * 10^9
        let scale = exp10 - frac_part.len() as i32 + 9;
        let base = mantissa.checked_mul(mul)?;
        let nanos = if scale >= 0 {
            base.checked_mul(10i128.checked_pow(scale as u32)?)?
        } else {
            let d = 10i128.checked_pow((-scale) as u32)?;
            // round up like upstream's ScaledValue
            (base + d - 1) / d
        };
        Some(Self {
            nanos: sign * nanos,
            binary,
        })
    }

    /// Sum of two quantities (binary when the left one is, or it is zero).
    pub fn add(self, o: Self) -> Self {
        Self {
            nanos: self.nanos + o.nanos,
            binary: if self.nanos == 0 {
                o.binary
            } else {
                self.binary
            },
        }
    }

    /// Whether this is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value as a float (for ratios).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// The canonical form upstream prints: the largest suffix that keeps the value whole
    /// (binary suffixes for binary quantities), `m`/`u`/`n` below one.
    pub fn canonical(&self) -> String {
        let n = self.nanos;
        let sign = if n < 0 { "-" } else { "" };
        let a = n.abs();
        if a == 0 {
            return "0".into();
        }
        if a % NANO == 0 {
            let units = a / NANO;
            if self.binary {
                for (suf, sh) in [
                    ("Ei", 60),
                    ("Pi", 50),
                    ("Ti", 40),
                    ("Gi", 30),
                    ("Mi", 20),
                    ("Ki", 10),
                ] {
                    let d = 1i128 << sh;
                    if units % d == 0 {
                        return format!("{sign}{}{suf}", units / d);
                    }
                }
                return format!("{sign}{units}");
            }
            for (suf, e) in [
                ("E", 18),
                ("P", 15),
                ("T", 12),
                ("G", 9),
                ("M", 6),
                ("k", 3),
            ] {
                let d = 10i128.pow(e);
                if units % d == 0 {
                    return format!("{sign}{}{suf}", units / d);
                }
            }
            return format!("{sign}{units}");
        }
        if a % 1_000_000 == 0 {
            return format!("{sign}{}m", a / 1_000_000);
        }
        if a % 1_000 == 0 {
            return format!("{sign}{}u", a / 1_000);
        }
        format!("{sign}{a}n")
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Parse a JSON quantity (a string, or a bare number).
pub fn from_json(v: &serde_json::Value) -> Option<Quantity> {
    match v {
        serde_json::Value::String(s) => Quantity::parse(s),
        serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).expect(s)
    }

    #[test]
    fn parse_and_print() {
        assert_eq!(q("500m").nanos, 500_000_000);
        assert_eq!(q("1").nanos, NANO);
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1Ki").nanos, 1024 * NANO);
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1.5Gi").canonical(), "1536Mi");
        assert_eq!(q("1000m").canonical(), "1");
        assert_eq!(q("1500m").canonical(), "1500m");
        assert_eq!(q("2000").canonical(), "2k");
        assert_eq!(q("128Mi").add(q("128Mi")).canonical(), "256Mi");
        assert_eq!(q("500m").add(q("500m")).canonical(), "1");
        assert!(q("2") > q("1900m"));
        assert_eq!(q("-1").canonical(), "-1");
        for bad in ["", "abc", "1.2.3", "5Xi", "m"] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }
}
