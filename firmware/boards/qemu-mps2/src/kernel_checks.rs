//! The build's kernel table (on Cortex-M4/M7 the Armv7E-M DSP twins) against the scalar
//! reference, slot by slot, on random shapes and random data: every int8 twin must give the
//! reference's bytes exactly. Shapes cover tails (channel counts not a multiple of 4, odd
//! pixel counts), strides 1 and 2, padding, channel offsets into wider tensors, and
//! parameters the twins hand back to the reference (huge zero points, `multiplier = MIN`,
//! a channel count over the stack block). The seed is printed; the run repeats exactly.
use crate::Tally;
use cortex_m_semihosting::hprintln;
use lorkd_runtime::kernels::{ConvI8, Geom, Kernels, OutQ};

/// Seed of the random shapes and data (fixed: the image's checks repeat exactly).
const SEED: u32 = 0x5eed_1234;
const TRIALS: usize = 150;
const XMAX: usize = 24 * 1024;
const WMAX: usize = 48 * 1024;
const YMAX: usize = 24 * 1024;
const RQMAX: usize = 1100;

struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.next() as usize % (hi - lo)
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Pointwise,
    Depthwise,
    Stem,
}

struct Bufs {
    x: [i8; XMAX],
    w: [i8; WMAX],
    rq: [[i32; 3]; RQMAX],
    y0: [i8; YMAX],
    y1: [i8; YMAX],
    /// f32 factors as bytes (4-aligned, so the rebuild takes its f32 paths).
    fac: Fac,
    /// f32 input planes (the input quantisation check); the linear head's inputs.
    xf: [f32; XFMAX],
    /// The linear head's weights.
    wf: [f32; WFMAX],
}

const WFMAX: usize = 4096;

const XFMAX: usize = 1200;

const FACMAX: usize = 8192;
#[repr(align(4))]
struct Fac([u8; FACMAX]);

/// A random geometry of `f` whose buffers fit, or `None` (the caller draws again).
fn geom(r: &mut Rng, f: Family) -> Option<Geom> {
    // A third of the stem cases are the model's stem (3 dense channels, 3×3): the twin's
    // patches of windows inside the image.
    if f == Family::Stem && r.range(0, 3) == 0 {
        let (h, w, stride, pad) = (r.range(3, 14), r.range(3, 14), r.range(1, 3), r.range(0, 2));
        let (ho, wo) = (
            Geom::out_dim(h, 3, stride, pad),
            Geom::out_dim(w, 3, stride, pad),
        );
        let cout = r.range(1, 40);
        return Some(Geom {
            h,
            w,
            in_stride: 3,
            c_off: 0,
            cin: 3,
            ho,
            wo,
            cout,
            k: 3,
            stride,
            pad,
        });
    }
    // An eighth of the pointwise cases are one pixel (the 1×1 layers at 32 px) with rows of
    // 64 to 192, often a multiple of 64: the lone pixel's mat-vec, in passes of 8 steps.
    if f == Family::Pointwise && r.range(0, 8) == 0 {
        let cin = if r.range(0, 2) == 0 { 64 * r.range(1, 4) } else { r.range(64, 193) };
        return Some(Geom {
            h: 1,
            w: 1,
            in_stride: cin,
            c_off: 0,
            cin,
            ho: 1,
            wo: 1,
            cout: r.range(1, 120),
            k: 1,
            stride: 1,
            pad: 0,
        });
    }
    let cin = match (f, r.range(0, 20)) {
        (Family::Stem, _) => r.range(1, 12),
        (_, 0) => r.range(1025, 1040), // over the pointwise stack block: the fallback
        (_, 1..=4) => r.range(90, 200),
        _ => r.range(1, 50),
    };
    let (k, pad, stride) = match f {
        Family::Pointwise => (1, 0, r.range(1, 3)),
        Family::Depthwise => (3, 1, r.range(1, 3)),
        Family::Stem => {
            let k = r.range(1, 6);
            (k, r.range(0, k / 2 + 1), r.range(1, 3))
        }
    };
    let cout = match f {
        Family::Depthwise => cin,
        _ if r.range(0, 10) == 0 => r.range(100, 1040),
        _ => r.range(1, 40),
    };
    let (h, w) = (r.range(k.max(1), 10), r.range(k.max(1), 10));
    let c_off = if r.range(0, 2) == 0 { 0 } else { r.range(0, 5) };
    let in_stride = cin + c_off + r.range(0, 3);
    let (ho, wo) = (
        Geom::out_dim(h, k, stride, pad),
        Geom::out_dim(w, k, stride, pad),
    );
    let g = Geom {
        h,
        w,
        in_stride,
        c_off,
        cin,
        ho,
        wo,
        cout,
        k,
        stride,
        pad,
    };
    let wl = match f {
        Family::Depthwise => 9 * cin,
        _ => cout * cin * k * k,
    };
    let fits = g.in_len() <= XMAX && wl <= WMAX && g.out_len() <= YMAX && cout <= RQMAX;
    (fits && ho > 0 && wo > 0).then_some(g)
}

/// One random case of `f`: fills the buffers, runs both kernels; `true` if equal.
fn case(r: &mut Rng, b: &mut Bufs, f: Family, fast: ConvI8, slow: ConvI8) -> bool {
    let g = loop {
        if let Some(g) = geom(r, f) {
            break g;
        }
    };
    for v in &mut b.x[..g.in_len()] {
        *v = r.i8();
    }
    let wl = if f == Family::Depthwise {
        9 * g.cin
    } else {
        g.cout * g.cin * g.k * g.k
    };
    for v in &mut b.w[..wl] {
        *v = r.i8();
    }
    let zx = match r.range(0, 40) {
        0 => 40_000 - r.range(0, 80_000) as i32, // x − zx outside i16 sometimes
        _ => r.range(0, 256) as i32 - 128,
    };
    // A third of the cases are tables as packed layers have them (every channel with a
    // right shift, a multiplier in [2^30, 2^31), a bias well inside i32, no floor): the
    // twins' layer-wide short-form paths; the rest mix in every other form.
    let plain = r.range(0, 3) == 0;
    for rq in &mut b.rq[..g.cout] {
        let bias = match r.range(0, 10) {
            0 if !plain => r.next() as i32,
            _ => (r.next() as i32) >> 12,
        };
        let mult = match r.range(0, 50) {
            0 if !plain => i32::MIN,
            1 if !plain => r.next() as i32,
            _ => (1 << 30) + (r.next() >> 2) as i32,
        };
        let shift = match r.range(0, 20) {
            0 if !plain => r.range(0, 70) as i32 - 35,
            _ if plain => -(r.range(1, 24) as i32),
            _ => r.range(0, 14) as i32 - 12,
        };
        *rq = [bias, mult, shift];
    }
    let zy = r.range(0, 256) as i32 - 128;
    let q = OutQ {
        zero_point: zy,
        lo: if plain || r.range(0, 2) == 0 { -128 } else { zy },
    };
    let n = g.out_len();
    b.y0[..n].fill(0x55);
    b.y1[..n].fill(0x55);
    slow(
        &g,
        &b.x[..g.in_len()],
        zx,
        &b.w[..wl],
        &b.rq[..g.cout],
        q,
        &mut b.y0[..n],
    );
    fast(
        &g,
        &b.x[..g.in_len()],
        zx,
        &b.w[..wl],
        &b.rq[..g.cout],
        q,
        &mut b.y1[..n],
    );
    let ok = b.y0[..n] == b.y1[..n];
    if !ok {
        hprintln!("[fw] kernel mismatch: {:?} zx {} {:?}", g, zx, q);
    }
    ok
}

/// Every int8 slot of `Kernels::best()` against `Kernels::reference()`.
pub fn run(t: &mut Tally) {
    let best = Kernels::best();
    let reference = Kernels::reference();
    hprintln!("[fw] kernel table: {} (seed {:#x})", best.isa, SEED);
    t.check(
        "kernel table: the Armv7E-M DSP twins are selected on this core",
        best.isa == "armv7em-dsp",
    );
    let Some(b) = cortex_m::singleton!(: Bufs = Bufs {
        x: [0; XMAX],
        w: [0; WMAX],
        rq: [[0; 3]; RQMAX],
        y0: [0; YMAX],
        y1: [0; YMAX],
        fac: Fac([0; FACMAX]),
        xf: [0.0; XFMAX],
        wf: [0.0; WFMAX],
    }) else {
        return t.check("kernel checks: buffers", false);
    };
    let mut r = Rng(SEED);
    let slots: [(&str, Family, ConvI8, ConvI8); 3] = [
        (
            "pointwise int8 conv ≡ reference",
            Family::Pointwise,
            best.conv1x1_i8,
            reference.conv1x1_i8,
        ),
        (
            "depthwise 3x3 int8 (s1, s2) ≡ reference",
            Family::Depthwise,
            best.dwconv3x3_i8,
            reference.dwconv3x3_i8,
        ),
        (
            "k×k int8 conv (stem) ≡ reference",
            Family::Stem,
            best.conv_i8,
            reference.conv_i8,
        ),
    ];
    for (name, f, fast, slow) in slots {
        let ok = (0..TRIALS).all(|_| case(&mut r, b, f, fast, slow));
        hprintln!("[fw] kernels: {}: {} random shapes", name, TRIALS);
        t.check(name, ok);
    }
    // Its own stream: the checks after it keep their shapes.
    let mut re = Rng(SEED ^ 0x0ed9_e500);
    let ok = (0..TRIALS).all(|i| edges_case(&mut re, b, i, best, reference));
    hprintln!("[fw] kernels: output stage at the i32 edges: {} cases", TRIALS);
    t.check(
        "int8 output stage (pointwise, depthwise) at the i32 edges ≡ reference",
        ok,
    );
    let mut rf = Rng(SEED ^ 0x0f05_ab1e);
    let ok = (0..TRIALS).all(|i| fusable_case(&mut rf, b, i, best, reference));
    hprintln!("[fw] kernels: pointwise layers one row short of the fused form: {} cases", TRIALS);
    t.check("pointwise int8 conv, a row off the fused short form (mult < 0, shift, bias) ≡ reference", ok);
    let ok = (0..TRIALS).all(|_| sums_case(&mut r, b, best, reference));
    hprintln!("[fw] kernels: pointwise int8 sums (streaming W0): {} random shapes", TRIALS);
    t.check("pointwise int8 sums (streaming experts' W0) ≡ reference", ok);
    let ok = (0..TRIALS).all(|i| rebuild_case(&mut r, i, best, reference));
    t.check(
        "rebuild re-quantisation (f32 → int8 weights), incl. NaN/inf/zero rows",
        ok,
    );
    t.check(
        "kernel table: whole-channel and whole-layer rebuilds (one pass at rank 4) are plugged in",
        best.rebuild_i8.is_some() && best.rebuild_layer_i8.is_some(),
    );
    let (mut ok, mut fused) = (true, 0);
    for i in 0..TRIALS {
        let (same, f) = materialize_case(&mut r, b, i, best, reference);
        ok &= same;
        fused += f as usize;
    }
    hprintln!(
        "[fw] kernels: int8 rebuild: {} random convs, {} at rank 4 (one pass)",
        TRIALS,
        fused
    );
    t.check(
        "int8 rebuild of whole convs (B·A, add, re-quantise) ≡ reference",
        ok && fused > TRIALS / 2,
    );
    let ok = (0..TRIALS).all(|_| maxpool_case(&mut r, b, best, reference));
    hprintln!("[fw] kernels: int8 max pool 3x3/2: {} random shapes", TRIALS);
    t.check("int8 max pool 3x3/2 ≡ reference", ok);
    let mut rq = Rng(SEED ^ 0x0071_a2e5);
    let ok = (0..TRIALS).all(|i| quantize_case(&mut rq, b, i));
    hprintln!("[fw] kernels: input quantisation: {} random planes", TRIALS);
    t.check("int8 input quantisation (one VCVT a value) ≡ QParams::quantize", ok);
    let mut rl = Rng(SEED ^ 0x11ea_0f32);
    let ok = (0..TRIALS).all(|i| linear_case(&mut rl, b, i, best, reference));
    hprintln!("[fw] kernels: f32 linear head: {} random shapes", TRIALS);
    t.check("f32 linear head (VLDM/VMLA) ≡ reference, bit for bit", ok);
    let ok = (0..64).all(|chunk| f16_case(b, chunk));
    hprintln!("[fw] kernels: f16 factor values and int8 row scales: all 65536 patterns");
    t.check("f16 factors and int8 factor scales (VCVTB) ≡ IEEE half, every pattern", ok);
    let ok = (0..6 * TRIALS).all(|i| requant_table_case(&mut r, i, best, reference));
    hprintln!("[fw] kernels: requantisation tables: {} random tables", 6 * TRIALS);
    t.check(
        "requantisation tables ≡ reference and the double-precision spec",
        ok,
    );
}

/// The output stage where its integer steps overflow or round: accumulators `x − zx` of a
/// pointwise conv with unit weights (`cin = 1`) and of a depthwise conv with one tap inside
/// the image (a 1×1 input), plus biases at and around `i32::MIN`, `i32::MAX`, `±2^k`, with
/// multipliers at both ends (`MAX`, `2^30`, `MIN + 1`, negative, `MIN`), every shift of
/// −35..=34 in turn and both floors: each `acc + bias` lands within 255 of an edge, or on
/// a rounding tie of the shift.
fn edges_case(r: &mut Rng, b: &mut Bufs, case: usize, fast: Kernels, slow: Kernels) -> bool {
    const C: usize = 96;
    let edges = [
        i32::MIN,
        i32::MIN + 1,
        i32::MAX,
        i32::MAX - 1,
        0,
        -1,
        1,
        1 << 30,
        -(1 << 30),
    ];
    let mults = [i32::MAX, 1 << 30, (1 << 30) + 1, i32::MIN + 1, -(1 << 30), i32::MIN];
    let shift = (case % 70) as i32 - 35;
    for (o, rq) in b.rq[..C].iter_mut().enumerate() {
        let bias = match r.range(0, 4) {
            0 => edges[r.range(0, edges.len())],
            // A multiple of 2^k plus half of it: ties of a right shift by k.
            1 => {
                let k = r.range(1, 31);
                ((r.next() as i32) >> k << k).wrapping_add(1 << (k - 1))
            }
            2 => (1i32 << r.range(0, 31)).wrapping_neg(),
            _ => r.next() as i32,
        };
        let mult = match r.range(0, 3) {
            0 => mults[r.range(0, mults.len())],
            _ => r.next() as i32,
        };
        // Mostly this case's shift, some channels another (mixed blocks).
        let sh = if o % 5 == 4 { r.range(0, 70) as i32 - 35 } else { shift };
        *rq = [bias, mult, sh];
    }
    let zx = r.range(0, 256) as i32 - 128;
    let zy = r.range(0, 256) as i32 - 128;
    let q = OutQ {
        zero_point: zy,
        lo: if case % 2 == 0 { -128 } else { zy },
    };
    let mut ok = true;
    // Pointwise: 5 pixels (2x2 tiles and a lone pixel), `w = 1`: `acc = x − zx`.
    let gp = Geom {
        h: 1,
        w: 5,
        in_stride: 1,
        c_off: 0,
        cin: 1,
        ho: 1,
        wo: 5,
        cout: C,
        k: 1,
        stride: 1,
        pad: 0,
    };
    // Depthwise on a 1×1 input: only the centre tap is inside.
    let gd = Geom {
        h: 1,
        w: 1,
        in_stride: C,
        c_off: 0,
        cin: C,
        ho: 1,
        wo: 1,
        cout: C,
        k: 3,
        stride: 1,
        pad: 1,
    };
    for v in &mut b.x[..C] {
        *v = r.i8();
    }
    for v in &mut b.w[..9 * C] {
        *v = if r.range(0, 2) == 0 { 1 } else { r.i8() };
    }
    for (g, wl, fa, sl) in [
        (gp, C, fast.conv1x1_i8, slow.conv1x1_i8),
        (gd, 9 * C, fast.dwconv3x3_i8, slow.dwconv3x3_i8),
    ] {
        let n = g.out_len();
        b.y0[..n].fill(0x55);
        b.y1[..n].fill(0x55);
        let (x, w, rq) = (&b.x[..g.in_len()], &b.w[..wl], &b.rq[..C]);
        sl(&g, x, zx, w, rq, q, &mut b.y0[..n]);
        fa(&g, x, zx, w, rq, q, &mut b.y1[..n]);
        if b.y0[..n] != b.y1[..n] {
            hprintln!("[fw] output stage mismatch: {:?} zx {} {:?} shift {}", g, zx, q, shift);
            ok = false;
        }
    }
    ok
}

/// A pointwise conv (rows a multiple of 4, 4 to 9 pixels, no floor) whose table takes the
/// fused short form in every row but one: a negative multiplier with a one-bit shift
/// (where the short form's rounding fix-up differs), a shift outside `1..=23`, or a bias at
/// the `|s| < 2^30` bound. The layer must not run fused (`gemm::fusable`'s bound on all
/// rows at once, then row by row): the reference's bytes.
fn fusable_case(r: &mut Rng, b: &mut Bufs, case: usize, fast: Kernels, slow: Kernels) -> bool {
    let (cin, np, cout) = (4 * r.range(1, 5), r.range(4, 10), r.range(2, 40));
    let g = Geom {
        h: 1,
        w: np,
        in_stride: cin,
        c_off: 0,
        cin,
        ho: 1,
        wo: np,
        cout,
        k: 1,
        stride: 1,
        pad: 0,
    };
    for v in &mut b.x[..np * cin] {
        *v = r.i8();
    }
    for v in &mut b.w[..cout * cin] {
        *v = r.i8();
    }
    for rq in &mut b.rq[..cout] {
        *rq = [(r.next() as i32) >> 15, (1 << 30) | (r.next() >> 2) as i32, -(r.range(1, 13) as i32)];
    }
    let o = r.range(0, cout);
    b.rq[o] = match case % 3 {
        0 => [0, -(1 << 24) - r.range(0, 1 << 20) as i32, -1],
        1 => [0, 1 << 30, [0, -24, 2][r.range(0, 3)]],
        _ => [[(1 << 30) - 7, -(1 << 30) + 7, i32::MAX][r.range(0, 3)], 1 << 30, -8],
    };
    let (zx, zy) = (r.range(0, 256) as i32 - 128, r.range(0, 256) as i32 - 128);
    let q = OutQ { zero_point: zy, lo: -128 };
    let n = np * cout;
    b.y0[..n].fill(0x55);
    b.y1[..n].fill(0x55);
    let (x, w, rq) = (&b.x[..np * cin], &b.w[..cout * cin], &b.rq[..cout]);
    (slow.conv1x1_i8)(&g, x, zx, w, rq, q, &mut b.y0[..n]);
    (fast.conv1x1_i8)(&g, x, zx, w, rq, q, &mut b.y1[..n]);
    b.y0[..n] == b.y1[..n]
}

/// One random head `y = W·x + b` (1–12 outputs of 0–1100 inputs, every fourth case the
/// model's 1024 inputs; values of mixed magnitudes, a zero, an infinity or a NaN now and
/// then, never two NaNs in one product) from both tables, compared bit for bit.
fn linear_case(r: &mut Rng, b: &mut Bufs, case: usize, fast: Kernels, slow: Kernels) -> bool {
    let n = match case % 4 {
        0 => 1024,
        1 => 8 * r.range(0, 40),
        _ => r.range(0, 1100),
    };
    let m = r.range(1, 13).min(WFMAX / n.max(1));
    let val = |r: &mut Rng, special: bool| -> f32 {
        let v = r.next();
        match v % 97 {
            0 if special => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN][(v >> 8) as usize % 5],
            _ => ((v >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * [1.0, 1e-3, 30.0][(v >> 4) as usize % 3],
        }
    };
    // Specials in `x` only on odd cases, in `W` only on even ones: no NaN times a NaN.
    for v in &mut b.xf[..n] {
        *v = val(r, case % 2 == 1);
    }
    for v in &mut b.wf[..m * n] {
        *v = val(r, case % 2 == 0);
    }
    let mut bias = [0f32; 12];
    for v in &mut bias[..m] {
        *v = val(r, false);
    }
    let (mut ya, mut yb) = ([1f32; 12], [2f32; 12]);
    (fast.linear_f32)(&b.xf[..n], &b.wf[..m * n], &bias[..m], &mut ya[..m]);
    (slow.linear_f32)(&b.xf[..n], &b.wf[..m * n], &bias[..m], &mut yb[..m]);
    ya[..m].iter().zip(&yb[..m]).all(|(p, q)| p.to_bits() == q.to_bits())
}

/// The f32 bits of the IEEE half `h`, by integer steps (the oracle of [`f16_case`]): a
/// NaN keeps its sign and payload with the quiet bit set.
fn f16_bits(h: u16) -> u32 {
    let (sign, e, m) = (((h & 0x8000) as u32) << 16, ((h >> 10) & 0x1f) as u32, (h & 0x3ff) as u32);
    match (e, m) {
        (0, 0) => sign,
        // m·2^−24 with m's top bit at p: 2^(p − 24)·(1.f).
        (0, _) => {
            let p = 31 - m.leading_zeros();
            sign | ((p + 103) << 23) | ((m << (23 - p)) & 0x7f_ffff)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, _) => sign | 0x7fc0_0000 | (m << 13),
        _ => sign | ((e + 112) << 23) | (m << 13),
    }
}

/// Halves `1024·chunk ..` (1024 patterns) decoded as the switch and the streaming
/// experts decode them: as an f16 factor's elements (`Factor::get`, `decode_into`) and as
/// an int8 factor's row scales (`decode_into`: code 1 times the scale, and
/// `decode_transposed_into`), against [`f16_bits`].
fn f16_case(b: &mut Bufs, chunk: usize) -> bool {
    use lorkd_runtime::format::factor::Factor;
    use lorkd_runtime::format::DeltaDType;
    const R: usize = 1024;
    let h = |i: usize| (chunk * R + i) as u16;
    // int8 `[R, 1]`: R codes of 1, then R scales.
    for i in 0..R {
        b.fac.0[i] = 1;
        b.fac.0[R + 2 * i..R + 2 * i + 2].copy_from_slice(&h(i).to_le_bytes());
    }
    let Some(f) = Factor::from_bytes(&b.fac.0[..3 * R], DeltaDType::I8, R, 1) else {
        return false;
    };
    let want = |i: usize| f16_bits(h(i));
    let mut ok = true;
    f.decode_into(&mut b.xf[..R]);
    ok &= (0..R).all(|i| b.xf[i].to_bits() == want(i));
    f.decode_transposed_into(&mut b.xf[..R]);
    ok &= (0..R).all(|i| b.xf[i].to_bits() == want(i));
    // f16 `[1, R]`.
    for i in 0..R {
        b.fac.0[2 * i..2 * i + 2].copy_from_slice(&h(i).to_le_bytes());
    }
    let Some(f) = Factor::from_bytes(&b.fac.0[..2 * R], DeltaDType::F16, 1, R) else {
        return false;
    };
    f.decode_into(&mut b.xf[..R]);
    ok &= (0..R).all(|i| b.xf[i].to_bits() == want(i) && f.get(0, i).to_bits() == want(i));
    if !ok {
        hprintln!("[fw] f16 decode mismatch in patterns {:#06x}..", chunk * R);
    }
    ok
}

/// One random conv's `[bias, multiplier, shift]` table (1–13 channels) from both tables'
/// `requant_table` slot and from `ChannelRequant::new_f64` (the double spec, soft-float
/// here): scales across binades (all-ones mantissas, whose multipliers can round up to
/// 2^31, and a special value now and then), weight scales a few steps from where the
/// multiplier's exponent steps, multipliers past both ends of the shift, biases on half
/// steps and a few f32 steps from them (quotients up to past 2^20), past the i32 codes, zero.
fn requant_table_case(r: &mut Rng, case: usize, fast: Kernels, slow: Kernels) -> bool {
    use lorkd_runtime::quant::ChannelRequant;
    const N: usize = 13;
    let special = [0.0, -0.0, -1.0, f32::MIN_POSITIVE / 4.0, f32::INFINITY, f32::NAN];
    let scale = |r: &mut Rng, lo: u32, span: u32| -> f32 {
        let v = r.next();
        let e = (97 + lo + (v >> 20) % span) << 23;
        if v % 211 == 0 {
            special[(v >> 8) as usize % special.len()]
        } else if v % 13 == 0 {
            f32::from_bits(e | 0x7f_ffff)
        } else {
            f32::from_bits(e | (r.next() & 0x7f_ffff))
        }
    };
    let n = r.range(1, N + 1);
    // Activation scales 2^-12 .. 2^2, weight scales 2^-16 .. 2^-2 (from 2^-30).
    let (s_x, mut s_y) = (scale(r, 18, 15), scale(r, 18, 15));
    let mut ws = [0f32; N];
    for w in &mut ws[..n] {
        *w = scale(r, 14, 15);
    }
    // A few f32 steps from `v` (its bits ± up to 4).
    let nudge = |r: &mut Rng, v: f32| f32::from_bits((v.to_bits() as i32 + r.range(0, 9) as i32 - 4) as u32);
    match case % 6 {
        // `s_y` the f32 nearest `s_x·s_w`: multipliers a hair from a power of two.
        1 | 4 => s_y = s_x * ws[0],
        // `s_w` a few steps from `s_y/s_x·2^k`: `mx·mw/my` at the edges where the quotient's
        // exponent steps (the Cortex-M twin's thresholds) and rounds up to 2^31.
        3 => {
            for w in &mut ws[..n] {
                let k = [0.25f32, 0.5, 1.0, 2.0][r.range(0, 4)];
                *w = nudge(r, s_y / s_x * k);
            }
        }
        // Multipliers past the shift's ends: `(0, 0)` below 2^−32, `(MAX, 30)` from 2^31 on.
        5 => {
            let k = [1e-12f32, 4e-10, 2.3e-10, 1e9, 2.2e9, 5e10][r.range(0, 6)];
            s_y = nudge(r, s_x * ws[0] / k);
        }
        _ => {}
    }
    let mut bias = [0f32; N];
    for (j, b) in bias[..n].iter_mut().enumerate() {
        let v = r.next();
        let sxw = s_x * ws[j];
        *b = match v % 64 {
            0 => special[(v >> 8) as usize % special.len()],
            1 => ((v >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 1e10,
            2..=12 => ((v >> 8) % 2001) as f32 - 1000.5,
            13..=30 => (((v >> 8) % 4001) as f32 - 2000.0 + 0.5) * sxw,
            // A few f32 steps from a half-integer quotient up to past 2^20 (the twin's
            // single-precision estimate meets its margin test there, either way).
            31..=46 => {
                let k = ((v >> 8) % [50, 5000, 1 << 21][(v >> 4) as usize % 3]) as f32 + 0.5;
                let t = nudge(r, k * sxw);
                if v & 1 == 0 { t } else { -t }
            }
            _ => ((v >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 20.0,
        };
    }
    let (mut a, mut b) = ([[0i32; 3]; N], [[1i32; 3]; N]);
    (fast.requant_table)(&bias[..n], s_x, &ws[..n], s_y, &mut a[..n]);
    (slow.requant_table)(&bias[..n], s_x, &ws[..n], s_y, &mut b[..n]);
    let spec = (0..n).all(|j| ChannelRequant::new_f64(bias[j], s_x, ws[j], s_y).to_array() == a[j]);
    let ok = a[..n] == b[..n] && spec;
    if !ok {
        hprintln!("[fw] requant table mismatch: s_x {} s_y {} ws {:?} bias {:?}", s_x, s_y, &ws[..n], &bias[..n]);
    }
    ok
}

/// One random pointwise conv's exact sums (`conv1x1_sums_i8`, the streaming experts' `W0`
/// GEMM) from both tables: every (pixel, channel) handed out exactly once with the same
/// sum, whatever the tiling. Checked by a count and an order-free hash of (position, sum).
fn sums_case(r: &mut Rng, b: &mut Bufs, fast: Kernels, slow: Kernels) -> bool {
    let g = loop {
        if let Some(g) = geom(r, Family::Pointwise) {
            break g;
        }
    };
    for v in &mut b.x[..g.in_len()] {
        *v = r.i8();
    }
    for v in &mut b.w[..g.cout * g.cin] {
        *v = r.i8();
    }
    let zx = match r.range(0, 40) {
        0 => 40_000 - r.range(0, 80_000) as i32,
        _ => r.range(0, 256) as i32 - 128,
    };
    let (x, w) = (&b.x[..g.in_len()], &b.w[..g.cout * g.cin]);
    let digest = |f: lorkd_runtime::kernels::SumsI8| {
        let (mut count, mut hash) = (0usize, 0u32);
        f(&g, x, zx, w, &mut |t| {
            for i in 0..t.np {
                for j in 0..t.no {
                    let pos = ((t.p0 + i) * g.cout + t.o0 + j) as u32;
                    let v = t.acc[i * t.no + j] as u32;
                    hash = hash.wrapping_add(mix(pos.wrapping_mul(0x9e37_79b9) ^ mix(v)));
                    count += 1;
                }
            }
        });
        (count, hash)
    };
    let (a, b2) = (digest(fast.conv1x1_sums_i8), digest(slow.conv1x1_sums_i8));
    let ok = a == b2 && a.0 == g.ho * g.wo * g.cout;
    if !ok {
        hprintln!("[fw] sums mismatch: {:?} zx {}", g, zx);
    }
    ok
}

/// A 32-bit integer hash (murmur3's finaliser).
fn mix(mut v: u32) -> u32 {
    v ^= v >> 16;
    v = v.wrapping_mul(0x85eb_ca6b);
    v ^= v >> 13;
    v = v.wrapping_mul(0xc2b2_ae35);
    v ^ (v >> 16)
}

/// One random max pool (sides 1–13, 1–40 channels: odd sides, channel tails), codes over
/// the whole int8 range with runs of equal and extreme values; both tables, same bytes.
fn maxpool_case(r: &mut Rng, b: &mut Bufs, fast: Kernels, slow: Kernels) -> bool {
    let (h, w, c) = (r.range(1, 14), r.range(1, 14), r.range(1, 41));
    let ho = Geom::out_dim(h, 3, 2, 1);
    let wo = Geom::out_dim(w, 3, 2, 1);
    let (nx, ny) = (h * w * c, ho * wo * c);
    let pick = r.range(0, 4);
    for v in &mut b.x[..nx] {
        *v = match (pick, r.next() % 8) {
            (0, 0) => -128,
            (0, 1) => 127,
            (1, _) => (r.next() % 3) as i8 - 1,
            _ => r.i8(),
        };
    }
    b.y0[..ny].fill(0x55);
    b.y1[..ny].fill(-0x55);
    (fast.maxpool_i8)(h, w, c, &b.x[..nx], &mut b.y0[..ny]);
    (slow.maxpool_i8)(h, w, c, &b.x[..nx], &mut b.y1[..ny]);
    b.y0[..ny] == b.y1[..ny]
}

/// One random expert conv rebuilt by both tables (`switch::materialize_i8_with`): f32
/// factors of rank 4 mostly (the one-pass path), others and k = 3 (the two-pass path), with
/// zeros, a NaN or an infinity now and then, zero `W0` channels, and tiny experts
/// (`max|w|` between 2^−126 and 2^−64). `(bytes and scales bit-identical, the one-pass path
/// was taken)`.
fn materialize_case(r: &mut Rng, b: &mut Bufs, case: usize, fast: Kernels, slow: Kernels) -> (bool, bool) {
    use lorkd_runtime::format::DeltaDType;
    use lorkd_runtime::switch::{materialize_i8_with, Delta, Factor};
    const COUT: usize = 8;
    const NMAX: usize = 40 * 9;
    // Every tenth case (k = 1, rank 4): a tiny expert, `max|w|` about 2^E for E from −126
    // to −66 (half of them below −118), rows a multiple of 8 or 12: the whole-channel
    // kernels must leave such channels to the portable rounding (`AMAX_LO`; their `1/s`
    // overflows near 2^−126).
    let tiny = case % 10 == 6;
    let e = if !tiny {
        0
    } else if r.range(0, 2) == 0 {
        -126 + r.range(0, 8) as i32
    } else {
        -118 + r.range(0, 53) as i32
    };
    let k = if case % 4 == 3 { 3 } else { 1 };
    let rank = if case % 5 == 4 { r.range(1, 7) } else { 4 };
    let (cout, mut cin) = (r.range(1, COUT + 1), r.range(1, 41));
    if tiny {
        cin = [8, 12, 16, 24, 32, 36, 40][r.range(0, 7)];
    }
    // Both factors must fit the factor buffer (rank 5–6 at k = 3 with many channels did not).
    let rk = rank * k;
    let cin = cin.min((b.fac.0.len() / 4 / rk - cout * k) / k);
    let (ck, n) = (cin * k, cin * k * k);
    let (na, nb) = (rk * ck, cout * k * rk);
    let scale = match tiny {
        // Factors of 2^(E/2): products, sums and `s0·q` of about 2^E.
        true => f32::from_bits(((127 + e / 2) as u32) << 23),
        false => [1e-3f32, 0.05, 1.0, 30.0][case % 4],
    };
    let unit = |r: &mut Rng| (r.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
    for i in 0..na + nb {
        let v = match r.next() % 64 {
            0 => 0.0,
            1 => -0.0,
            2 if case % 7 == 0 => [f32::NAN, f32::INFINITY][r.range(0, 2)],
            _ => unit(r) * scale,
        };
        b.fac.0[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    for (i, q) in b.x[..cout * n].iter_mut().enumerate() {
        *q = if (i / n) % 3 == 2 { 0 } else { r.i8() };
    }
    let mut s0 = [0f32; COUT];
    for v in &mut s0[..cout] {
        *v = match tiny {
            true => (unit(r) + 1.0) * scale * scale * (1.0 / 128.0),
            false => (unit(r) + 1.0) * 0.01 * scale,
        };
    }
    let (fa, fb) = b.fac.0[..4 * (na + nb)].split_at(4 * na);
    let (Some(a), Some(bf)) = (
        Factor::from_bytes(fa, DeltaDType::F32, rk, ck),
        Factor::from_bytes(fb, DeltaDType::F32, cout * k, rk),
    ) else {
        return (false, false);
    };
    let d = Delta {
        a,
        b: bf,
        cout,
        cin,
        k,
    };
    let mut scratch = [0f32; NMAX];
    let (mut sa, mut sb) = ([0f32; COUT], [0f32; COUT]);
    let w0 = &b.x[..cout * n];
    let (qa, qb) = (&mut b.y0[..cout * n], &mut b.y1[..cout * n]);
    materialize_i8_with(&fast, w0, &s0, &d, &mut scratch, qa, &mut sa);
    materialize_i8_with(&slow, w0, &s0, &d, &mut scratch, qb, &mut sb);
    let same = qa == qb && sa[..cout].iter().zip(&sb[..cout]).all(|(x, y)| x.to_bits() == y.to_bits());
    (same, rk == 4 && a.as_f32().is_some())
}

/// One random row of the rebuild's per-channel re-quantisation, both tables; `true` if the
/// scale, the f32 row and the int8 row are bit-identical.
fn rebuild_case(r: &mut Rng, case: usize, fast: Kernels, slow: Kernels) -> bool {
    const N: usize = 600;
    let n = r.range(1, N);
    let scale = [1e-3f32, 0.05, 1.0, 30.0][case % 4];
    let unit = |r: &mut Rng| (r.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
    let (mut wa, mut wb, mut w0) = ([0f32; N], [0f32; N], [0i8; N]);
    for i in 0..n {
        wa[i] = unit(r) * scale;
        w0[i] = (r.range(0, 255) as i32 - 127) as i8;
    }
    match case % 10 {
        0 => wa[..n].fill(0.0),
        1 => wa[r.range(0, n)] = f32::NAN,
        2 => wa[r.range(0, n)] = f32::INFINITY,
        3 => w0[..n].fill(0),
        _ => {}
    }
    wb[..n].copy_from_slice(&wa[..n]);
    let s0 = (unit(r) + 1.0) * 0.01 * scale;
    let (mut qa, mut qb) = ([0i8; N], [0i8; N]);
    let sa = (fast.requant_weights)(&mut wa[..n], &w0[..n], s0, &mut qa[..n]);
    let sb = (slow.requant_weights)(&mut wb[..n], &w0[..n], s0, &mut qb[..n]);
    let same_w = wa[..n]
        .iter()
        .zip(&wb[..n])
        .all(|(a, b)| a.to_bits() == b.to_bits());
    sa.to_bits() == sb.to_bits() && qa[..n] == qb[..n] && same_w
}

/// One random CHW input (1–6 planes of 1–200 values, in `b.xf`) quantised by the
/// engine's input step (`engine::quantize_chw`: on this target one saturating `VCVT` a
/// value) against `QParams::quantize` value by value. Values: within a few f32 steps of
/// half-integer multiples of the scale (the rounding ties), past ±2^22 steps (the clamp),
/// ±0, NaN, infinities, subnormals and random bits; zero points up to the i32 ends.
fn quantize_case(r: &mut Rng, b: &mut Bufs, case: usize) -> bool {
    use lorkd_runtime::quant::QParams;
    let (c, hw) = (r.range(1, 7), r.range(1, 201));
    let n = c * hw;
    let q = QParams {
        scale: match case % 4 {
            0 => 1.0,
            1 => 0.5,
            _ => f32::from_bits(0x3a00_0000 + (r.next() % 0x0400_0000)),
        },
        zero_point: match r.range(0, 6) {
            0 => [i32::MIN, i32::MAX, 1 << 22, -(1 << 22) + 100][r.range(0, 4)],
            1 => (r.next() >> 6) as i32 - (1 << 25),
            _ => r.range(0, 256) as i32 - 128,
        },
    };
    for v in &mut b.xf[..n] {
        let x = match r.range(0, 8) {
            0 => f32::from_bits(r.next()),
            1 => [0.0, -0.0, f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, 5e6, -5e6][r.range(0, 8)],
            _ => {
                let k = (r.range(0, 801) as f32 - 400.0) * 0.5 * q.scale;
                f32::from_bits((k.to_bits() as i32 + r.range(0, 9) as i32 - 4) as u32)
            }
        };
        *v = x;
    }
    let input = &b.xf[..n];
    let y = &mut b.y0[..n];
    if !lorkd_runtime::engine::quantize_chw(input, q, c, hw, y) {
        return false;
    }
    (0..c).all(|ch| (0..hw).all(|p| y[p * c + ch] == q.quantize(input[ch * hw + p])))
}

