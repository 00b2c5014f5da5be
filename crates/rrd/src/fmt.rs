//! Number formatting as XAPI prints it.

/// Formats a float as xapi-rrd's `Utils.f_to_s` does: `NaN`, `Infinity`, `-Infinity`,
/// `0.0` for zero, and C's `%0.5g` otherwise (5 significant digits, trailing zeros dropped,
/// exponent form below 1e-4 and from 1e5).
pub fn xapi_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else if f == 0.0 {
        "0.0".to_string()
    } else {
        format_g(f, 5)
    }
}

/// C's `%.{p}g` for a finite, non-zero `f` (`p` >= 1).
fn format_g(f: f64, p: usize) -> String {
    let p = p.max(1);
    let sci = format!("{:.*e}", p - 1, f);
    let (mant, exp) = match sci.split_once('e') {
        Some(parts) => parts,
        None => return sci,
    };
    let x: i64 = exp.parse().unwrap_or(0);
    let p_i = i64::try_from(p).unwrap_or(i64::MAX);
    if x < -4 || x >= p_i {
        let sign = if x < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", strip_zeros(mant), sign, x.unsigned_abs())
    } else {
        let decimals = usize::try_from(p_i - 1 - x).unwrap_or(0);
        strip_zeros(&format!("{:.*}", decimals, f)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Formats a float for Prometheus' text format (`NaN`, `+Inf`, `-Inf`, else Rust's
/// shortest round-trip decimal form).
pub fn prom_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_c_percent_0_5g() {
        // Expected strings are what C's printf("%0.5g") prints.
        let cases = [
            (0.5, "0.5"),
            (1.0, "1"),
            (-2.25, "-2.25"),
            (12345.0, "12345"),
            (123456.0, "1.2346e+05"),
            (99999.5, "1e+05"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (1.0 / 3.0, "0.33333"),
            (2.0 / 3.0, "0.66667"),
            (1e100, "1e+100"),
            (4294967296.0, "4.295e+09"),
            (0.1, "0.1"),
        ];
        for (v, want) in cases {
            assert_eq!(xapi_float(v), want, "{v}");
        }
    }

    #[test]
    fn specials() {
        assert_eq!(xapi_float(f64::NAN), "NaN");
        assert_eq!(xapi_float(f64::INFINITY), "Infinity");
        assert_eq!(xapi_float(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(xapi_float(0.0), "0.0");
        assert_eq!(xapi_float(-0.0), "0.0");
        assert_eq!(xapi_float(f64::MIN_POSITIVE / 4.0), "5.5627e-309");
        assert_eq!(prom_float(f64::NAN), "NaN");
        assert_eq!(prom_float(f64::INFINITY), "+Inf");
        assert_eq!(prom_float(0.25), "0.25");
    }
}
