//! Arena layout beyond the activation region — one rule shared by the packer (which writes
//! the totals into the bundle's `ArenaPlan`) and the engine (which carves the arena by it).
//!
//! ```text
//! [activations: ArenaPlan::activation_bytes] (16-aligned)
//! Materialized: for each expert conv in order: weight Cout·Cin·k·k elements (f32 or i8),
//!               then int8 only: Cout × (bias i32, multiplier i32, shift i32); each 16-aligned
//! Streaming:    low-rank scratch: max over expert convs of Hout·Wout·r·k f32;
//!               int8 only: max Cout × (bias i32, multiplier i32, shift i32)
//! both:         pooled feature vector f32 [features]
//! ```
use crate::format::{Manifest, Mode, Op, Precision};

/// Rounds `n` up to the format's alignment.
pub const fn align(n: usize) -> usize {
    (n + crate::format::ALIGN - 1) & !(crate::format::ALIGN - 1)
}

/// Arena bytes needed after the activation region in `mode`.
pub fn extra_bytes(m: &Manifest<'_>, mode: Mode) -> usize {
    let elem = match m.precision {
        Precision::F32 => 4,
        Precision::Int8 => 1,
    };
    let int8 = m.precision == Precision::Int8;
    let mut total = 0usize;
    let mut scratch = 0usize;
    let mut max_cout = 0usize;
    let values = m.values;
    for op in m.ops.iter() {
        if let Op::Conv { input, output, cout, k, expert: Some(_), .. } = op {
            let (cout, k) = (cout as usize, k as usize);
            let cin = input.c_len as usize;
            max_cout = max_cout.max(cout);
            total += align(cout * cin * k * k * elem);
            if int8 {
                total += align(cout * 12);
            }
            if let Some(v) = values.get(output as usize) {
                scratch = scratch.max(v.h as usize * v.w as usize * m.rank as usize * k * 4);
            }
        }
    }
    let body = match mode {
        Mode::Materialized => total,
        Mode::Streaming => align(scratch) + if int8 { align(max_cout * 12) } else { 0 },
    };
    body + align(m.features as usize * 4)
}
