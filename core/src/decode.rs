//! Register decoding: words from the wire to an engineering value, or the
//! reason there is none. Pure functions, no I/O.

use crate::domain::{DataType, Order};

/// How to turn a channel's registers into a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    /// Data type of the raw value.
    pub data_type: DataType,
    /// Byte order inside each register.
    pub byte_order: Order,
    /// Register order of 32-bit values.
    pub word_order: Order,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// Added after scaling.
    pub offset: f64,
    /// Sensor range; outside it there is no value.
    pub range: Option<[f64; 2]>,
    /// Decimal places the value is rounded to (the channel's resolution);
    /// `None`: only a float register's own precision (7 significant digits).
    pub decimals: Option<u8>,
}

impl Encoding {
    /// Decimal places of a channel without a `decimals` key: what its scale
    /// and offset imply for an integer register (`scale = 0.01` → 2), none
    /// (the register's precision) for a float one.
    pub fn implied_decimals(data_type: DataType, scale: f64, offset: f64) -> Option<u8> {
        (data_type != DataType::F32).then(|| decimals_of(scale).max(decimals_of(offset)))
    }
}

/// The decimal places `x` needs when written shortest (0.01 → 2, 0.5 → 1,
/// 1 → 0), at most 6.
pub fn decimals_of(x: f64) -> u8 {
    (0u8..=6)
        .find(|&d| {
            let p = 10f64.powi(i32::from(d));
            let y = x * p;
            (y - y.round()).abs() <= 1e-9 * y.abs().max(1.0)
        })
        .unwrap_or(6)
}

/// `v` rounded to `decimals` places: the nearest double to the decimal
/// number a person reads (0.35000000000000003 → 0.35).
pub fn round_to(v: f64, decimals: u8) -> f64 {
    let p = 10f64.powi(i32::from(decimals));
    let r = (v * p).round() / p;
    // -0.0 shows as "-0" on some screens.
    if r == 0.0 { 0.0 } else { r }
}

/// `v` rounded to `digits` significant digits (an f32 register holds
/// about 7: 0.41999998688697815 → 0.42).
pub fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the exponent of a finite double fits an i32"
    )]
    let magnitude = v.abs().log10().floor() as i32;
    let places = digits - 1 - magnitude;
    if places >= 0 {
        let p = 10f64.powi(places);
        (v * p).round() / p
    } else {
        let p = 10f64.powi(-places);
        (v / p).round() * p
    }
}

/// Why decoded registers give no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoValue {
    /// Outside the sensor's range, or not a finite number (a NaN from an
    /// f32 register is how many sensors say "broken").
    OutOfRange,
    /// Fewer registers than the data type needs (a short reply).
    Short,
}

fn word(w: u16, byte_order: Order) -> u16 {
    match byte_order {
        Order::Big => w,
        Order::Little => w.swap_bytes(),
    }
}

/// The raw number held in `words` (starting at the channel's first register).
pub fn raw(words: &[u16], e: &Encoding) -> Result<f64, NoValue> {
    let need = usize::from(e.data_type.registers());
    if words.len() < need {
        return Err(NoValue::Short);
    }
    let w0 = word(words[0], e.byte_order);
    let v = match e.data_type {
        DataType::U16 => f64::from(w0),
        DataType::I16 => f64::from(w0.cast_signed()),
        DataType::U32 | DataType::I32 | DataType::F32 => {
            let w1 = word(words[1], e.byte_order);
            let (hi, lo) = match e.word_order {
                Order::Big => (w0, w1),
                Order::Little => (w1, w0),
            };
            let bits = (u32::from(hi) << 16) | u32::from(lo);
            match e.data_type {
                DataType::U32 => f64::from(bits),
                DataType::I32 => f64::from(bits.cast_signed()),
                _ => f64::from(f32::from_bits(bits)),
            }
        }
    };
    Ok(v)
}

/// The engineering value of `words`, rounded to the channel's resolution
/// (once, here, so every screen, log and message shows the same number)
/// and checked against the sensor range.
pub fn value(words: &[u16], e: &Encoding) -> Result<f64, NoValue> {
    let mut raw = raw(words, e)?;
    if e.data_type == DataType::F32 {
        raw = round_significant(raw, 7);
    }
    let v = raw * e.scale + e.offset;
    let v = match e.decimals {
        Some(d) if v.is_finite() => round_to(v, d),
        _ => v,
    };
    in_range(v, e.range)
}

/// The value of a coil or discrete input: 1 or 0.
pub fn bit(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// A finite value inside the range, or `OutOfRange`.
pub fn in_range(v: f64, range: Option<[f64; 2]>) -> Result<f64, NoValue> {
    if !v.is_finite() {
        return Err(NoValue::OutOfRange);
    }
    match range {
        Some([lo, hi]) if v < lo || v > hi => Err(NoValue::OutOfRange),
        _ => Ok(v),
    }
}

/// The registers that encode `v` (the inverse of [`raw`] before scaling);
/// the simulator and the tests use it.
pub fn encode(v: f64, data_type: DataType, byte_order: Order, word_order: Order) -> Vec<u16> {
    let pair = |bits: u32| {
        let (hi, lo) = ((bits >> 16) as u16, (bits & 0xffff) as u16);
        match word_order {
            Order::Big => [hi, lo],
            Order::Little => [lo, hi],
        }
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "saturating float-to-int casts are what encoding a test value wants"
    )]
    let words: Vec<u16> = match data_type {
        DataType::U16 => vec![v.round() as u16],
        DataType::I16 => vec![(v.round() as i16).cast_unsigned()],
        DataType::U32 => pair(v.round() as u32).to_vec(),
        DataType::I32 => pair((v.round() as i32).cast_unsigned()).to_vec(),
        DataType::F32 => pair((v as f32).to_bits()).to_vec(),
    };
    words.into_iter().map(|w| word(w, byte_order)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(data_type: DataType, byte_order: Order, word_order: Order) -> Encoding {
        Encoding {
            data_type,
            byte_order,
            word_order,
            scale: 1.0,
            offset: 0.0,
            range: None,
            decimals: None,
        }
    }

    #[test]
    fn values_carry_the_channels_resolution_not_float_noise() {
        let e = |data_type, scale, offset| Encoding {
            scale,
            offset,
            decimals: Encoding::implied_decimals(data_type, scale, offset),
            ..enc(data_type, Order::Big, Order::Big)
        };
        // 35 × 0.01 is 0.35000000000000003 in doubles; 82 × 0.01 0.8200000000000001.
        assert_eq!(value(&[35], &e(DataType::U16, 0.01, 0.0)), Ok(0.35));
        assert_eq!(value(&[82], &e(DataType::U16, 0.01, 0.0)), Ok(0.82));
        assert_eq!(value(&[1234], &e(DataType::U16, 0.001, 0.0)), Ok(1.234));
        assert_eq!(value(&[7], &e(DataType::U16, 0.1, -0.5)), Ok(0.2));
        assert_eq!(value(&[40], &e(DataType::U16, 1.0, 0.0)), Ok(40.0));
        // An f32 0.42 is 0.41999998688697815 as a double.
        let words = encode(0.42, DataType::F32, Order::Big, Order::Big);
        assert_eq!(value(&words, &e(DataType::F32, 1.0, 0.0)), Ok(0.42));
        let words = encode(20.8, DataType::F32, Order::Big, Order::Big);
        assert_eq!(value(&words, &e(DataType::F32, 1.0, 0.0)), Ok(20.8));
        // An explicit `decimals` wins.
        let one = Encoding {
            decimals: Some(1),
            ..e(DataType::U16, 0.01, 0.0)
        };
        assert_eq!(value(&[87], &one), Ok(0.9));
        assert_eq!(decimals_of(0.05), 2);
        assert_eq!(decimals_of(2.0), 0);
        assert_eq!(round_significant(123_456_789.0, 7), 123_456_800.0);
    }

    #[test]
    fn known_wire_values() {
        use DataType::*;
        use Order::*;
        // 0x1234_5678 as the four orders devices use (ABCD, CDAB, BADC, DCBA).
        let cases: [(Order, Order, [u16; 2]); 4] = [
            (Big, Big, [0x1234, 0x5678]),
            (Big, Little, [0x5678, 0x1234]),
            (Little, Big, [0x3412, 0x7856]),
            (Little, Little, [0x7856, 0x3412]),
        ];
        for (b, w, words) in cases {
            assert_eq!(
                raw(&words, &enc(U32, b, w)),
                Ok(f64::from(0x1234_5678u32)),
                "{b:?} {w:?}"
            );
        }
        assert_eq!(raw(&[0xffff], &enc(I16, Big, Big)), Ok(-1.0));
        assert_eq!(raw(&[0xffff], &enc(U16, Big, Big)), Ok(65535.0));
        assert_eq!(raw(&[0xffff, 0xfffe], &enc(I32, Big, Big)), Ok(-2.0));
        // 1.5f32 = 0x3FC0_0000
        assert_eq!(raw(&[0x3fc0, 0x0000], &enc(F32, Big, Big)), Ok(1.5));
        assert_eq!(raw(&[0x0000, 0x3fc0], &enc(F32, Big, Little)), Ok(1.5));
        assert_eq!(raw(&[0x1234], &enc(U32, Big, Big)), Err(NoValue::Short));
    }

    #[test]
    fn scale_offset_and_range() {
        let e = Encoding {
            scale: 0.01,
            offset: -1.0,
            range: Some([0.0, 4.0]),
            ..enc(DataType::U16, Order::Big, Order::Big)
        };
        assert_eq!(value(&[150], &e), Ok(0.5));
        assert_eq!(value(&[99], &e), Err(NoValue::OutOfRange));
        assert_eq!(value(&[501], &e), Err(NoValue::OutOfRange));
        let nan = Encoding {
            range: None,
            ..enc(DataType::F32, Order::Big, Order::Big)
        };
        assert_eq!(value(&[0x7fc0, 0], &nan), Err(NoValue::OutOfRange));
    }

    fn order() -> impl Strategy<Value = Order> {
        prop_oneof![Just(Order::Big), Just(Order::Little)]
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            v in -30000i32..30000, b in order(), w in order(), t in 0usize..4,
        ) {
            let data_type = [DataType::I16, DataType::I32, DataType::F32, DataType::U32][t];
            let v = if data_type == DataType::U32 { f64::from(v.abs()) } else { f64::from(v) };
            let words = encode(v, data_type, b, w);
            prop_assert_eq!(raw(&words, &enc(data_type, b, w)), Ok(v));
        }

        #[test]
        fn decoding_never_panics(words in proptest::collection::vec(any::<u16>(), 0..3), b in order(), w in order(), t in 0usize..5) {
            let data_type = [DataType::U16, DataType::I16, DataType::U32, DataType::I32, DataType::F32][t];
            let e = Encoding { range: Some([0.0, 100.0]), ..enc(data_type, b, w) };
            if let Ok(v) = value(&words, &e) {
                prop_assert!((0.0..=100.0).contains(&v));
            }
        }
    }
}
