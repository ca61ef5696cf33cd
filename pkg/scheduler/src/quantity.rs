//! Resource quantities (`100m`, `1.5Gi`, `2e3`) as integers, rounded up like upstream's
//! `Quantity.Value()` / `MilliValue()`.
//!
//! `kube_quantity` was considered: its integer conversions truncate fractions (`1.5Gi` → 1 GiB)
//! and reject milli quantities, so the few lines here do the exact arithmetic instead.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity as an exact fraction `num / den` (`den` a power of ten).
fn parse(s: &str) -> Option<(i128, i128)> {
    let s = s.trim();
    let (sign, s) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut num: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut den: i128 = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp.unsigned_abs() > 30 {
                return None;
            }
            let p = 10i128.pow(exp.unsigned_abs());
            if exp >= 0 { (p, 1) } else { (1, p) }
        }
        _ => return None,
    };
    num = num.checked_mul(mul)?.checked_mul(sign)?;
    den = den.checked_mul(div)?;
    Some((num, den))
}

fn ceil_div(num: i128, den: i128) -> i128 {
    let q = num / den;
    if num % den != 0 && num > 0 { q + 1 } else { q }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v > 0 { i64::MAX } else { i64::MIN })
}

/// The quantity in thousandths (cpu in millicores), rounded up; `None` when it does not parse.
pub fn milli_value(q: &Quantity) -> Option<i64> {
    let (num, den) = parse(&q.0)?;
    Some(clamp(ceil_div(num.checked_mul(1000)?, den)))
}

/// The quantity as a whole number (bytes, a count), rounded up; `None` when it does not parse.
pub fn value(q: &Quantity) -> Option<i64> {
    let (num, den) = parse(&q.0)?;
    Some(clamp(ceil_div(num, den)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_string())
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(milli_value(&q("100m")), Some(100));
        assert_eq!(milli_value(&q("1")), Some(1000));
        assert_eq!(milli_value(&q("1.5")), Some(1500));
        assert_eq!(milli_value(&q("0.1")), Some(100));
        assert_eq!(
            milli_value(&q("250u")),
            Some(1),
            "rounded up like MilliValue"
        );
        assert_eq!(milli_value(&q("2e3")), Some(2_000_000));
        assert_eq!(milli_value(&q("nonsense")), None);
        assert_eq!(milli_value(&q("")), None);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(value(&q("1Ki")), Some(1024));
        assert_eq!(value(&q("1.5Gi")), Some(1536 * 1024 * 1024));
        assert_eq!(value(&q("128Mi")), Some(128 << 20));
        assert_eq!(value(&q("1G")), Some(1_000_000_000));
        assert_eq!(value(&q("500m")), Some(1), "fractions round up");
        assert_eq!(value(&q("110")), Some(110));
        assert_eq!(value(&q("1e3")), Some(1000));
        assert_eq!(value(&q("-1")), Some(-1));
        assert_eq!(value(&q("1Xi")), None);
    }
}
