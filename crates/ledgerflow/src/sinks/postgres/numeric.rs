//! NUMERIC in PostgreSQL's binary format, exact both ways.

use super::*;

/// An exact NUMERIC: `unscaled * 10^-scale`. postgres-types has no exact
/// numeric type; this one carries DECIMAL(38, s) values both ways.
/// Read back, `scale` is the value's display scale (the column's scale for a
/// constrained `numeric(p, s)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgNumeric(pub i128, pub i16);

impl fmt::Display for PgNumeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&values::decimal_text(self.0, self.1))
    }
}

impl ToSql for PgNumeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        put_numeric(self.0, self.1, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgNumeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        get_numeric(raw)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

pub(super) const NUMERIC_NEG: u16 = 0x4000;
pub(super) const NUMERIC_MAX_DSCALE: i16 = 0x3FFF;

/// Binary NUMERIC: ndigits, weight, sign, dscale (i16/i16/u16/u16), then
/// base-10000 digits, most significant first; digit `k` is worth
/// `10000^(weight - k)`, so the groups align on the decimal point.
pub(super) fn put_numeric(unscaled: i128, scale: i16, out: &mut BytesMut) -> Result<(), BoxError> {
    if !(-NUMERIC_MAX_DSCALE..=NUMERIC_MAX_DSCALE).contains(&scale) {
        return Err(format!("numeric scale {scale} is out of range").into());
    }
    if scale % 4 == 0 {
        put_numeric_aligned(unscaled, scale, out);
        return Ok(());
    }
    let dscale = scale.max(0) as u16;
    // Decimal digits of |unscaled|, least significant first: digits[i] is
    // worth 10^(i - scale).
    let parts = split_u64(unscaled.unsigned_abs(), 10_000_000_000_000_000_000);
    let mut digits = [0u8; 57];
    for (k, mut part) in parts.into_iter().enumerate() {
        for d in &mut digits[k * 19..(k + 1) * 19] {
            *d = (part % 10) as u8;
            part /= 10;
        }
    }
    let n = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    if n == 0 {
        out.put_slice(&[0, 0, 0, 0, 0, 0]);
        out.put_u16(dscale);
        return Ok(());
    }
    let scale = i32::from(scale);
    let digit = |power: i32| {
        usize::try_from(power + scale)
            .ok()
            .filter(|&i| i < n)
            .map_or(0, |i| i16::from(digits[i]))
    };
    // Group g holds the powers 4g..4g+3.
    let group = |g: i32| {
        (0..4)
            .rev()
            .fold(0i16, |acc, j| acc * 10 + digit(4 * g + j))
    };
    let top = (n as i32 - 1 - scale).div_euclid(4);
    let mut bottom = (-scale).div_euclid(4);
    // Terminates: the top group holds the leading non-zero digit.
    while group(bottom) == 0 {
        bottom += 1;
    }
    out.put_i16((top - bottom + 1) as i16);
    out.put_i16(top as i16);
    out.put_u16(if unscaled < 0 { NUMERIC_NEG } else { 0 });
    out.put_u16(dscale);
    for g in (bottom..=top).rev() {
        out.put_i16(group(g));
    }
    Ok(())
}

/// `mag` as three digits in base `base` (10^16 or 10^19), least
/// significant first. u128 division is a slow library call: at most two
/// of them, the rest is u64 arithmetic.
pub(super) fn split_u64(mag: u128, base: u64) -> [u64; 3] {
    match u64::try_from(mag) {
        Ok(m) => [m % base, m / base, 0],
        Err(_) => {
            let (b, high) = (u128::from(base), mag / u128::from(base));
            [(mag % b) as u64, (high % b) as u64, (high / b) as u64]
        }
    }
}

/// [`put_numeric`] for a scale that is a multiple of 4 (wei: scale 0): the
/// base-10000 digits of |unscaled| are the NUMERIC's digits as they are, so
/// they come straight from u64 divisions (a day's COPY encodes millions).
pub(super) fn put_numeric_aligned(unscaled: i128, scale: i16, out: &mut BytesMut) {
    // Up to 39 decimal digits: three parts of 16 digits, 12 groups of 4.
    let parts = split_u64(unscaled.unsigned_abs(), 10_000_000_000_000_000);
    // Least significant first.
    let mut groups = [0u16; 12];
    for (k, mut part) in parts.into_iter().enumerate() {
        for g in &mut groups[4 * k..4 * k + 4] {
            *g = (part % 10_000) as u16;
            part /= 10_000;
        }
    }
    let dscale = scale.max(0) as u16;
    let (Some(top), Some(bottom)) = (
        groups.iter().rposition(|&g| g != 0),
        groups.iter().position(|&g| g != 0),
    ) else {
        out.put_slice(&[0, 0, 0, 0, 0, 0]);
        out.put_u16(dscale);
        return;
    };
    out.put_i16((top - bottom + 1) as i16);
    out.put_i16(top as i16 - scale / 4);
    out.put_u16(if unscaled < 0 { NUMERIC_NEG } else { 0 });
    out.put_u16(dscale);
    for &g in groups[bottom..=top].iter().rev() {
        out.put_u16(g);
    }
}

pub(super) fn get_numeric(mut raw: &[u8]) -> Result<PgNumeric, BoxError> {
    if raw.len() < 8 {
        return Err("numeric: value too short".into());
    }
    let ndigits = raw.get_i16();
    let weight = i32::from(raw.get_i16());
    let negative = match raw.get_u16() {
        0 => false,
        NUMERIC_NEG => true,
        _ => return Err("numeric: NaN and infinity have no exact value".into()),
    };
    let dscale = raw.get_u16();
    if usize::try_from(ndigits).map_or(true, |n| n * 2 != raw.len()) {
        return Err("numeric: digit count does not match the value's length".into());
    }
    let overflow = || -> BoxError { "numeric: value does not fit in 128 bits".into() };
    let mut value: i128 = 0;
    for k in 0..i32::from(ndigits) {
        let d = i128::from(raw.get_i16());
        if !(0..10_000).contains(&d) {
            return Err(format!("numeric: invalid base-10000 digit {d}").into());
        }
        if d == 0 {
            continue;
        }
        let exp = 4 * (weight - k) + i32::from(dscale);
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| d.checked_mul(p))
                .ok_or_else(overflow)?
        } else {
            let p = 10i128.pow((-exp).min(4) as u32);
            if -exp > 4 || d % p != 0 {
                return Err("numeric: more fractional digits than its scale".into());
            }
            d / p
        };
        value = value.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(PgNumeric(
        if negative { -value } else { value },
        dscale as i16,
    ))
}
