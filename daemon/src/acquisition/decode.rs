//! Register decoding: words from the wire to an engineering value, or the
//! reason there is none. Pure functions, no I/O.

use crate::config::{DataType, Order};

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

/// The engineering value of `words`, checked against the sensor range.
pub fn value(words: &[u16], e: &Encoding) -> Result<f64, NoValue> {
    let v = raw(words, e)? * e.scale + e.offset;
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
        }
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
