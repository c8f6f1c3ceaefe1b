//! The int8 GEMM core both convs share: a block of pixels, each already widened to i16
//! `x − zx` (the pointwise conv's channels, or the stem's im2col patch), times the raw
//! int8 weight rows. Rows a multiple of 4 long (the pointwise convs) run register tiles of
//! 1 output channel × 4 pixels (two pixel pairs); others 2 channels × 2 pixels; an odd last
//! pixel (the whole of a 1×1-pixel layer) tiles of 3 channels × 1 pixel.
//!
//! Widened layout, per pair of pixels (`pair_words(n)` words): for each full group of 4
//! values `v0..v3`, four words — pixel 0's `[v0, v2]`, `[v1, v3]` (the order `SXTB16` /
//! `SXTB16 ROR #8` give a weight word, so weights need no repacking), then pixel 1's —; after
//! the full groups, the `n % 4` leftover values of pixel 0 then pixel 1 in natural order,
//! two words each. Per 4 inputs the 1×4 loop spends one weight load, 2 `SXTB16`, 4 two-word
//! loads and 8 `SMLAD` (16 MACs): each weight word is widened once for 4 pixels.
use super::dsp::{requant_run, smlad, sxtb16, sxtb16_ror8, Kq, ShortStage};
use crate::kernels::fixed::Rq;
use crate::kernels::OutQ;
use core::mem::MaybeUninit;

/// Widened words on the stack for one block of pixels (4 KiB).
pub(super) const XB: usize = 1024;

/// Words per pixel pair of `n` values.
#[inline]
pub(super) const fn pair_words(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Halfword offset of value `k` (of `n`) of the pair's pixel `odd` inside its pair block.
#[inline]
pub(super) fn hpos(k: usize, n: usize, odd: usize) -> usize {
    let nt = n & !3;
    let base = if k < nt {
        // [v0, v2] then [v1, v3]: v0 → 0, v1 → 2, v2 → 1, v3 → 3.
        8 * (k / 4) + ((k & 1) << 1 | (k >> 1) & 1)
    } else {
        2 * nt + (k - nt)
    };
    base + 4 * odd
}

/// The block buffer, written as halfwords, read by the GEMM as words: a view of the
/// caller's uninitialised stack words ([`Store`]) of which only the prefix a call uses is
/// zeroed ([`Buf::zeroed`]) — zeroing all 4 KiB cost more than a 1-pixel layer's GEMM, and
/// a buffer returned by value was copied.
pub(super) struct Buf<'s> {
    w: &'s mut Store,
    len: usize,
}

/// The stack words behind a [`Buf`]: `let mut s = [MaybeUninit::uninit(); XB]` costs nothing.
pub(super) type Store = [core::mem::MaybeUninit<u32>; XB];

impl<'s> Buf<'s> {
    /// The first `words` (at most [`XB`]) words of `w`, zeroed: 4 words a `STM` (3
    /// instructions with the loop, where word stores took ~2.5 a word), the last `len % 4`
    /// one by one.
    #[inline(always)]
    pub(super) fn zeroed(w: &'s mut Store, words: usize) -> Self {
        let len = words.min(XB);
        let q = len / 4;
        if q > 0 {
            // SAFETY: `q ≥ 1` passes each store 4 words at `p` and advance it 16 bytes: the
            // first `4·q ≤ len ≤ XB` words of `w` (a word array: 4-aligned, as `STM` needs).
            // No stack; r0–r3 are inputs it only reads; `p` and the count are clobbered
            // outputs; `SUBS` sets the flags.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "stm {p}!, {{r0, r1, r2, r3}}",
                    "subs {n}, {n}, #1",
                    "bne 2b",
                    p = inout(reg) w.as_mut_ptr() => _,
                    n = inout(reg) q => _,
                    in("r0") 0u32,
                    in("r1") 0u32,
                    in("r2") 0u32,
                    in("r3") 0u32,
                    options(nostack),
                );
            }
        }
        for v in &mut w[4 * q..len] {
            v.write(0);
        }
        Buf { w, len }
    }

    pub(super) fn words(&self) -> &[u32] {
        // SAFETY: the first `len ≤ XB` words were initialised by `zeroed` (and only written
        // since); the shared borrow of `self` covers the view's life.
        unsafe { core::slice::from_raw_parts(self.w.as_ptr() as *const u32, self.len) }
    }

    pub(super) fn words_mut(&mut self) -> &mut [u32] {
        // SAFETY: as `words`, with the exclusive borrow of `self` for the view's life.
        unsafe { core::slice::from_raw_parts_mut(self.w.as_mut_ptr() as *mut u32, self.len) }
    }

    /// The initialised words as halfwords (little-endian: halfword `2k` is word `k`'s low).
    pub(super) fn halves_mut(&mut self) -> &mut [i16] {
        // SAFETY: as `words_mut`; the words are 4-aligned, so 2-aligned, and every bit
        // pattern is a valid i16; `2·len` halfwords are the same `4·len` bytes.
        unsafe { core::slice::from_raw_parts_mut(self.w.as_mut_ptr() as *mut i16, 2 * self.len) }
    }
}

/// The 2x2 tile's inner loop (`2:` … `BNE 2b`), the `asm!` template of [`dot2x2`]: per
/// group of 4 inputs 2 weight loads (post-increment, unaligned), 4 `SXTB16`, 3 `LDRD` of
/// widened `x` (pixel 0's pair, pixel 1's, then pixel 0's again, as there are no registers
/// to keep all four words), 8 `SMLAD` and `SUBS`/`BNE`.
macro_rules! tile2x2_loop {
    () => {
        concat!(
            "2:\n",
            "ldr {wa}, [{pw0}], #4\n",
            "sxtb16 {wo}, {wa}, ror #8\n",
            "sxtb16 {wa}, {wa}\n",
            "ldrd {xe}, {xo}, [{px}]\n",
            "smlad {a}, {wa}, {xe}, {a}\n",
            "smlad {a}, {wo}, {xo}, {a}\n",
            "ldrd {xe}, {xo}, [{px}, #8]\n",
            "smlad {b}, {wa}, {xe}, {b}\n",
            "smlad {b}, {wo}, {xo}, {b}\n",
            "ldr {wa}, [{pw1}], #4\n",
            "sxtb16 {wo}, {wa}, ror #8\n",
            "sxtb16 {wa}, {wa}\n",
            "smlad {d}, {wa}, {xe}, {d}\n",
            "smlad {d}, {wo}, {xo}, {d}\n",
            "ldrd {xe}, {xo}, [{px}], #16\n",
            "smlad {c}, {wa}, {xe}, {c}\n",
            "smlad {c}, {wo}, {xo}, {c}\n",
            "subs {n}, {n}, #1\n",
            "bne 2b",
        )
    };
}

/// `init + [w0·x0, w0·x1, w1·x0, w1·x1]` (wrapping) over the `g` full groups of a pixel pair.
///
/// One `asm!` loop ([`tile2x2_loop`]), because left to itself LLVM spills an accumulator on
/// the 12 registers it may use here: 20 instructions per 16 MACs.
#[inline(always)]
fn dot2x2(w0: &[i8], w1: &[i8], x: &[u32], g: usize, init: [i32; 4]) -> [i32; 4] {
    let (w0, w1, x) = (&w0[..4 * g], &w1[..4 * g], &x[..4 * g]);
    let [mut a, mut b, mut c, mut d] = init;
    if g == 0 {
        return [a, b, c, d];
    }
    // SAFETY: the loop runs `g ≥ 1` times; each pass reads 4 bytes at `pw0` and at `pw1`
    // (rows sliced to `4·g` bytes above; `LDR` allows any alignment on Armv7-M) and 4 words
    // at `px` (`x` sliced to `4·g` words; a word slice is 4-aligned, as `LDRD` needs), then
    // advances all three, so every access stays inside the slices. It writes no memory and
    // no stack; the pointer, counter and scratch registers are declared clobbered outputs,
    // and it changes the condition flags (`SUBS`) and perhaps APSR.Q (`SMLAD`), so
    // `preserves_flags` is not claimed.
    unsafe {
        core::arch::asm!(
            tile2x2_loop!(),
            pw0 = inout(reg) w0.as_ptr() => _,
            pw1 = inout(reg) w1.as_ptr() => _,
            px = inout(reg) x.as_ptr() => _,
            n = inout(reg) g => _,
            a = inout(reg) a,
            b = inout(reg) b,
            c = inout(reg) c,
            d = inout(reg) d,
            wa = out(reg) _,
            wo = out(reg) _,
            xe = out(reg) _,
            xo = out(reg) _,
            options(nostack, readonly),
        );
    }
    [a, b, c, d]
}

/// [`dot2x2`] over all `n = w0.len()` values of a pixel pair `x` (`pair_words(n)` words):
/// the `g = n / 4` full groups, then the partial group's [`tail`]s.
#[inline(always)]
fn tile2x2(w0: &[i8], w1: &[i8], x: &[u32], init: [i32; 4]) -> [i32; 4] {
    let (n, g) = (w0.len(), w0.len() / 4);
    let [mut a, mut b, mut c, mut d] = dot2x2(w0, w1, x, g, init);
    if 4 * g < n {
        let (t0, t1) = (&w0[4 * g..], &w1[4 * g..]);
        let (h0, h1) = (&x[4 * g..], &x[(4 * g + 2).min(x.len())..]);
        a = a.wrapping_add(tail(t0, h0));
        b = b.wrapping_add(tail(t0, h1));
        c = c.wrapping_add(tail(t1, h0));
        d = d.wrapping_add(tail(t1, h1));
    }
    [a, b, c, d]
}

/// One group of 4 inputs of [`dot1x4_run`]'s 1×4 tile (15 instructions, 16 MACs): the
/// weight word widened once, each pixel's two widened words, two `SMLAD`s a pixel.
macro_rules! tile1x4_group {
    () => {
        concat!(
            "ldr {wa}, [{pw}], #4\n",
            "sxtb16 {wo}, {wa}, ror #8\n",
            "sxtb16 {wa}, {wa}\n",
            "ldrd {xe}, {xo}, [{pa}, #8]\n",
            "smlad {b}, {wa}, {xe}, {b}\n",
            "smlad {b}, {wo}, {xo}, {b}\n",
            "ldrd {xe}, {xo}, [{pa}], #16\n",
            "smlad {a}, {wa}, {xe}, {a}\n",
            "smlad {a}, {wo}, {xo}, {a}\n",
            "ldrd {xe}, {xo}, [{pb}, #8]\n",
            "smlad {d}, {wa}, {xe}, {d}\n",
            "smlad {d}, {wo}, {xo}, {d}\n",
            "ldrd {xe}, {xo}, [{pb}], #16\n",
            "smlad {c}, {wa}, {xe}, {c}\n",
            "smlad {c}, {wo}, {xo}, {c}",
        )
    };
}

/// One quad of the 1×4 tile as `asm!` template text, up to its epilogue (label `3`): the
/// loop state from the block at `[sp]` (row `w0`, `g`, `b0` at offsets 0, 4, 8), the 4 sums
/// from `b0`, `g` groups (an odd first one, then pairs); then `pa` moves to the next quad
/// and `xe` holds the block's address again. The caller's text before it pushes the
/// block's address (`SUB sp` 8, `STR`): [`dot1x4_run`]'s quads ([`dot1x4_layer`] keeps its
/// state on the stack itself and starts the sums from the bias).
macro_rules! dot1x4_quad {
    () => {
        concat!(
            "3:\n",
            "ldr {xe}, [sp]\n",
            "ldrd {pw}, {n}, [{xe}]\n",
            "ldr {a}, [{xe}, #8]\n",
            "add {pb}, {pa}, {n}, lsl #4\n",
            "mov {b}, {a}\n",
            "mov {c}, {a}\n",
            "mov {d}, {a}\n",
            // `g` odd: one group first; then pairs of groups.
            "lsrs {n}, {n}, #1\n",
            "bcc 2f\n",
            tile1x4_group!(),
            "\ncmp {n}, #0\n",
            "beq 4f\n",
            "2:\n",
            tile1x4_group!(),
            "\n",
            tile1x4_group!(),
            "\nsubs {n}, {n}, #1\n",
            "bne 2b\n",
            "4:\n",
            "mov {pa}, {pb}\n",
            "ldr {xe}, [sp]",
        )
    };
}

/// The end of each quad of the 1×4 tile as `asm!` template text: the pass count at offset
/// 16 of the block, down by one; the next quad (label `3`) or on.
macro_rules! dot1x4_next {
    () => {
        concat!(
            "ldr {n}, [{xe}, #16]\n",
            "subs {n}, {n}, #1\n",
            "str {n}, [{xe}, #16]\n",
            "bne 3b",
        )
    };
}

/// One weight row against `quads` consecutive pixel quads (two pixel pairs each, pairs
/// `4·g` words apart, `n = 4·g` values a pixel) in one `asm!`: each quad's 4 sums start
/// from `b0` and are stored in pixel order at `s0[4k..4k + 4]`. Per group of 4 inputs:
/// one weight `LDR`, 2 `SXTB16`, 4 `LDRD` (each pixel's widened words) and 8 `SMLAD`, plus
/// `SUBS`/`BNE` — 17 instructions per 16 MACs, where [`tile2x2_loop`] spends 19: a 1×4 tile
/// widens each weight word once for 4 pixels and needs no reload (12 registers: the row,
/// both pairs' pointers, the count, 4 sums, 2 weight and 2 input words). Between quads the
/// loop state lives in a small block in memory (its address on the stack).
#[inline(always)]
fn dot1x4_run(w0: &[i8], xs: &[u32], g: usize, quads: usize, b0: i32, s0: &mut [MaybeUninit<i32>]) {
    // The caller reads back `s0[..4·quads]`: every quad must run.
    assert!(g > 0 && quads > 0);
    let (w0, xs, s0) = (&w0[..4 * g], &xs[..quads * 8 * g], &mut s0[..4 * quads]);
    #[repr(C, align(8))]
    struct Ctl {
        w0: *const i8,
        g: usize,
        b0: i32,
        s0: *mut i32,
        quads: usize,
    }
    let mut ctl = Ctl {
        w0: w0.as_ptr(),
        g,
        b0,
        s0: s0.as_mut_ptr().cast(),
        quads,
    };
    // SAFETY: `ctl` is a live, exclusively borrowed `repr(C)` block (8-aligned): the loads
    // and stores at offsets 0..20 are its fields. Each of the `quads ≥ 1` passes resets the
    // row pointer to `w0` and runs `g ≥ 1` groups (an odd first one, then pairs) reading 4
    // bytes of the row (sliced to `4·g` bytes; `LDR` takes any alignment on Armv7-M) and 4
    // words at each of `pa` (pair `2k`) and `pb = pa + 16·g` bytes (pair `2k + 1`), both
    // advanced 4 words a group (`xs` sliced to `quads·8·g` words: pass `k` reads pairs `2k`
    // and `2k + 1`, `4·g` words each; a word slice is 4-aligned as `LDRD` needs); then the
    // next pass's `pa` is this one's end of pair `2k + 1`. Each pass stores 4 words at
    // `s0 + 16k` (sliced to `4·quads` words). The stack use is 8 bytes (`SUB`/`ADD sp`
    // around the loops, `sp` 8-aligned as before). Every register operand is a clobbered
    // output; `SUBS` sets the flags and `SMLAD` perhaps APSR.Q.
    unsafe {
        core::arch::asm!(
            "sub sp, sp, #8",
            "str {xe}, [sp]",
            dot1x4_quad!(),
            "ldr {wa}, [{xe}, #12]",
            "strd {a}, {b}, [{wa}], #8",
            "strd {c}, {d}, [{wa}], #8",
            "str {wa}, [{xe}, #12]",
            dot1x4_next!(),
            "add sp, sp, #8",
            xe = inout(reg) &mut ctl as *mut Ctl => _,
            pa = inout(reg) xs.as_ptr() => _,
            pb = out(reg) _,
            pw = out(reg) _,
            n = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            wa = out(reg) _,
            wo = out(reg) _,
            xo = out(reg) _,
        );
    }
}

/// The first group of a quad of [`dot1x4_layer`] as `asm!` template text: [`tile1x4_group`]
/// with every sum's first `SMLAD` accumulating onto the bias in `{a}` (`{a}`'s own last), so
/// the quad needs no copies of the bias.
macro_rules! tile1x4_first {
    () => {
        concat!(
            "ldr {wa}, [{pw}], #4\n",
            "sxtb16 {wo}, {wa}, ror #8\n",
            "sxtb16 {wa}, {wa}\n",
            "ldrd {xe}, {xo}, [{pa}, #8]\n",
            "smlad {b}, {wa}, {xe}, {a}\n",
            "smlad {b}, {wo}, {xo}, {b}\n",
            "ldrd {xe}, {xo}, [{pb}, #8]\n",
            "smlad {d}, {wa}, {xe}, {a}\n",
            "smlad {d}, {wo}, {xo}, {d}\n",
            "ldrd {xe}, {xo}, [{pb}], #16\n",
            "smlad {c}, {wa}, {xe}, {a}\n",
            "smlad {c}, {wo}, {xo}, {c}\n",
            "ldrd {xe}, {xo}, [{pa}], #16\n",
            "smlad {a}, {wa}, {xe}, {a}\n",
            "smlad {a}, {wo}, {xo}, {a}",
        )
    };
}

/// Every channel of a layer's chunk of pixels in 1×4 tiles with the output stage in each
/// quad's epilogue, in one `asm!`: for channel `o` (rows `n = 4·g` apart in `w`, table row
/// `rq[o]`), the sums of the `quads` pixel quads of `xs` start from its bias and are
/// requantised in registers (`dsp::short_asm`; `e − 1 = !shift` and `kz = zp2·2^(e−1)`,
/// `zp2 = 2·zp + 1`, as [`short_z`](super::dsp::short_z)) and stored at `y[i·stride + o]`,
/// `i` the pixel. For layers whose every channel takes the short form without a floor
/// ([`fusable`]; other channels get wrong bytes, nothing worse): no stack run of sums and no
/// per-channel call. The loop state lives in a block on the stack (`sp`-relative, so no
/// register holds its address): ~20 instructions a channel besides its quads, and ~38 a
/// quad besides its groups (the first group accumulates onto the bias, the quad loop ends
/// on the pixel pointer reaching the chunk's end).
#[allow(clippy::too_many_arguments)]
fn dot1x4_layer(
    w: &[i8],
    xs: &[u32],
    g: usize,
    quads: usize,
    rq: &[[i32; 3]],
    zp: i32,
    y: &mut [i8],
    stride: usize,
) {
    let cout = rq.len();
    assert!(g > 0 && quads > 0 && cout > 0 && 4 * quads * stride <= y.len() && cout <= stride);
    let (w, xs) = (&w[..cout * 4 * g], &xs[..quads * 8 * g]);
    let xend = xs.as_ptr_range().end;
    // SAFETY: the 64-byte block below `sp` (`SUB sp`, 8-aligned as before, restored by the
    // last `ADD`) holds the loop state: at 0 the channel's row, 4 `g − 1`, 8 its bias, 12
    // `16·g`, 16 the output pointer, 20 `stride`, 24/28/32 `mult`, `kz`, `e`, 36 the next
    // table row, 40 channels left, 44 `xs`, 48 its end, 52 the next channel's first output,
    // 56 `zp2`. The channel loop runs `cout ≥ 1` times; channel `o` reads table row `o` (12
    // bytes at `rq + 12o`, inside `rq`), its outputs start at `y + o`, `pa` at `xs`, and
    // its quads run until `pa` reaches the end of `xs` (`quads ≥ 1` of them, `pa` advancing
    // `32·g` bytes a quad: two pairs of `16·g`): each resets the row pointer to row `o` (at
    // `w + 4g·o`, inside `w`, sliced to `cout·4g` bytes) and runs `g ≥ 1` groups (the first,
    // then an odd one, then pairs: `LSRS` leaves `g − 1`'s low bit in C and `Z` for the
    // pairs, which the groups do not change), each reading 4 bytes of the row (`LDR`: any
    // alignment on Armv7-M) and 4 words at `pa` (pair `2k`) and at `pb = pa + 16·g` (pair
    // `2k + 1`), both advanced 4 words a group (`xs` sliced to `quads·8·g` words, 4-aligned
    // as `LDRD` needs); quad `k` stores 4 bytes at `y + o + (4k + i)·stride`, `i < 4`: at most
    // `(4·quads − 1)·stride + cout − 1 < 4·quads·stride ≤ y.len()` (asserted above, with
    // `cout ≤ stride`). Every register operand is a clobbered output; the flags and perhaps
    // APSR.Q change.
    unsafe {
        core::arch::asm!(
            "sub sp, sp, #64",
            "strd {pw}, {n}, [sp]",
            "str {a}, [sp, #12]",
            "str {b}, [sp, #20]",
            "strd {c}, {d}, [sp, #36]",
            "strd {wa}, {wo}, [sp, #44]",
            "strd {xe}, {xo}, [sp, #52]",
            // Channel `o`: bias, multiplier, `e`, `kz`; its first output; `pa` at `xs`.
            "5:",
            "ldr {pw}, [sp, #36]",
            "ldrd {a}, {b}, [{pw}]",
            "ldr {c}, [{pw}, #8]",
            "add {pw}, {pw}, #12",
            "str {pw}, [sp, #36]",
            "str {a}, [sp, #8]",
            "ldr {d}, [sp, #56]",
            "mvn {c}, {c}",
            "lsl {d}, {d}, {c}",
            "add {c}, {c}, #1",
            "strd {b}, {d}, [sp, #24]",
            "str {c}, [sp, #32]",
            "ldr {a}, [sp, #52]",
            "str {a}, [sp, #16]",
            "add {a}, {a}, #1",
            "str {a}, [sp, #52]",
            "ldr {pa}, [sp, #44]",
            // A quad: the row, `g − 1`, the bias and `16·g`; the first group onto the
            // bias, then an odd group, then pairs.
            "3:",
            "ldrd {pw}, {n}, [sp]",
            "ldrd {a}, {wa}, [sp, #8]",
            "add {pb}, {pa}, {wa}",
            tile1x4_first!(),
            "lsrs {n}, {n}, #1",
            "bcc 6f",
            tile1x4_group!(),
            "6:",
            "beq 4f",
            "2:",
            tile1x4_group!(),
            tile1x4_group!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            "4:",
            "mov {pa}, {pb}",
            "ldrd {pw}, {n}, [sp, #24]",
            "ldr {wa}, [sp, #32]",
            super::dsp::short_asm!("{a}", "{pw}", "{n}", "{wa}", "{wo}"),
            super::dsp::short_asm!("{b}", "{pw}", "{n}", "{wa}", "{wo}"),
            super::dsp::short_asm!("{c}", "{pw}", "{n}", "{wa}", "{wo}"),
            super::dsp::short_asm!("{d}", "{pw}", "{n}", "{wa}", "{wo}"),
            "ldrd {wo}, {xo}, [sp, #16]",
            "strb {a}, [{wo}]",
            "strb {b}, [{wo}, {xo}]",
            "add {wo}, {wo}, {xo}, lsl #1",
            "strb {c}, [{wo}]",
            "strb {d}, [{wo}, {xo}]",
            "add {wo}, {wo}, {xo}, lsl #1",
            "str {wo}, [sp, #16]",
            "ldr {wo}, [sp, #48]",
            "cmp {pa}, {wo}",
            "bne 3b",
            // The next channel's row.
            "ldr {pw}, [sp]",
            "ldr {n}, [sp, #12]",
            "add {pw}, {pw}, {n}, lsr #2",
            "str {pw}, [sp]",
            "ldr {n}, [sp, #40]",
            "subs {n}, {n}, #1",
            "str {n}, [sp, #40]",
            "bne 5b",
            "add sp, sp, #64",
            pw = inout(reg) w.as_ptr() => _,
            n = inout(reg) g - 1 => _,
            a = inout(reg) 16 * g => _,
            b = inout(reg) stride => _,
            c = inout(reg) rq.as_ptr() => _,
            d = inout(reg) cout => _,
            wa = inout(reg) xs.as_ptr() => _,
            wo = inout(reg) xend => _,
            xe = inout(reg) y.as_mut_ptr() => _,
            xo = inout(reg) 2 * zp + 1 => _,
            pa = out(reg) _,
            pb = out(reg) _,
        );
    }
}

/// Whether every channel of a layer with output stage `q` and table `rq` takes the short
/// form without a floor for sums over `n` widened inputs ([`dot1x4_layer`]'s condition).
///
/// First one test of a row that bounds them all, folded without a branch a row (4 ALU
/// instructions a row where the per-row test spends ~10): `[OR(|b| − [b < 0]) + 1, OR(mult),
/// AND(shift)]`. Its bias bounds every `|bias|` (`|b| − [b < 0]` is `b ^ (b >> 31)`), its
/// multiplier has a sign bit iff one has, and its `e − 1 = !AND(shift) = OR(!shift)` is at
/// least every row's `e − 1` (as unsigned): if it takes the short form, every row does.
/// Else (a large bias, a negative multiplier, or `e − 1` values whose OR reaches 23) the
/// rows one by one.
pub(super) fn fusable(rq: &[[i32; 3]], q: OutQ, n: usize) -> bool {
    let short = ShortStage::new(q, acc_max(n));
    if q.lo > -128 {
        return false;
    }
    let (mut b, mut m, mut e) = (0u32, 0i32, -1i32);
    for &[bias, mult, shift] in rq {
        b |= (bias ^ (bias >> 31)) as u32;
        m |= mult;
        e &= shift;
    }
    short.channel([b.wrapping_add(1) as i32, m, e]).is_some()
        || rq.iter().all(|&r| short.channel(r).is_some())
}

/// `|Σ w·(x − zx)| ≤ n·2^22` (`|w| ≤ 2^7`, `|x − zx| ≤ 2^15`): the bound on a layer's sums
/// before the bias.
fn acc_max(n: usize) -> u32 {
    u32::try_from(n).map_or(u32::MAX, |n| n.saturating_mul(1 << 22))
}

/// `[w0·x0, w1·x0]` over the `g` full groups of the pair's pixel 0 (an odd last pixel's
/// last one or two channels).
#[inline(always)]
fn dot2x1(w0: &[i8], w1: &[i8], x: &[u32], g: usize) -> [i32; 2] {
    let (w0, w1, x) = (&w0[..4 * g], &w1[..4 * g], &x[..4 * g]);
    let (mut a, mut c) = (0, 0);
    let (pw0, pw1, px) = (
        w0.as_ptr() as *const u32,
        w1.as_ptr() as *const u32,
        x.as_ptr(),
    );
    for i in 0..g {
        // SAFETY: `i < g`; the rows were sliced to `4·g` bytes and `x` to `4·g` words above,
        // so every read is in bounds; weight rows start at any byte, hence `read_unaligned`.
        let (wa, wb, xe0, xo0) = unsafe {
            let p = px.add(4 * i);
            (
                pw0.add(i).read_unaligned(),
                pw1.add(i).read_unaligned(),
                *p,
                *p.add(1),
            )
        };
        a = smlad(sxtb16_ror8(wa), xo0, smlad(sxtb16(wa), xe0, a));
        c = smlad(sxtb16_ror8(wb), xo0, smlad(sxtb16(wb), xe0, c));
    }
    [a, c]
}

/// One group of 4 inputs of [`dot1x3`] (16 instructions, 12 MACs): the pixel's two widened
/// words, then per row a weight `LDR`, 2 `SXTB16` and 2 `SMLAD`.
macro_rules! tile1x3_group {
    () => {
        concat!(
            "ldrd {xe}, {xo}, [{px}], #16\n",
            "ldr {wv}, [{pw0}, {nr}, lsl #1]\n",
            "sxtb16 {t}, {wv}\n",
            "smlad {c}, {t}, {xe}, {c}\n",
            "sxtb16 {t}, {wv}, ror #8\n",
            "smlad {c}, {t}, {xo}, {c}\n",
            "ldr {wv}, [{pw0}], #4\n",
            "sxtb16 {t}, {wv}\n",
            "smlad {a}, {t}, {xe}, {a}\n",
            "sxtb16 {t}, {wv}, ror #8\n",
            "smlad {a}, {t}, {xo}, {a}\n",
            "ldr {wv}, [{pw1}], #4\n",
            "sxtb16 {t}, {wv}\n",
            "smlad {b}, {t}, {xe}, {b}\n",
            "sxtb16 {t}, {wv}, ror #8\n",
            "smlad {b}, {t}, {xo}, {b}",
        )
    };
}

/// `[w0·x0, w1·x0, w2·x0]` over the `g` full groups of the pair's pixel 0 for three
/// consecutive weight rows `w[0..n]`, `w[n..2n]`, `w[2n..3n]` (a lone pixel: each weight
/// is used once, so the widening is not shared; three rows share each `x` load).
///
/// One `asm!` loop, two groups a pass ([`tile1x3_group`], an odd first group alone): per
/// group of 4 inputs one `LDRD` of the pixel's widened pair, then per row a weight `LDR`,
/// 2 `SXTB16` and 2 `SMLAD` — 17 instructions per 12 MACs with the loop's `SUBS`/`BNE`
/// (the two-row loop spends 14 per 8). Row 2 is addressed as `[row 0, n, LSL #1]`, so 12
/// registers suffice.
#[inline(always)]
fn dot1x3(w: &[i8], n: usize, x: &[u32], g: usize) -> [i32; 3] {
    assert!(4 * g <= n);
    let (w, x) = (&w[..3 * n], &x[..4 * g]);
    let (mut a0, mut a1, mut a2) = (0i32, 0i32, 0i32);
    if g == 0 {
        return [a0, a1, a2];
    }
    // SAFETY: `g ≥ 1` groups run in all (an odd first one, then `g / 2` passes of two);
    // group `j` reads 4 bytes at `w + 4j`, `w + n + 4j` and `w + 2n + 4j` (each row's group
    // `j`, `4j + 4 ≤ 4g ≤ n`, inside `w[..3n]`; `LDR` allows any alignment on Armv7-M) and 2
    // words at `x + 16j` (`x` sliced to `4g` words, a word slice is 4-aligned as `LDRD`
    // needs); the post-increments advance the row 0 and row 1 pointers by 4 bytes and `x`
    // by 4 words per group, so every access stays inside the slices. It writes no memory and
    // no stack; pointer, counter and scratch registers are clobbered outputs; `SUBS` sets the
    // flags and `SMLAD` perhaps APSR.Q, so `preserves_flags` is not claimed.
    unsafe {
        core::arch::asm!(
            // `g` odd: one group first; then pairs of groups.
            "lsrs {k}, {k}, #1",
            "bcc 2f",
            tile1x3_group!(),
            "cmp {k}, #0",
            "beq 3f",
            "2:",
            tile1x3_group!(),
            tile1x3_group!(),
            "subs {k}, {k}, #1",
            "bne 2b",
            "3:",
            pw0 = inout(reg) w.as_ptr() => _,
            pw1 = inout(reg) w[n..].as_ptr() => _,
            nr = in(reg) n,
            px = inout(reg) x.as_ptr() => _,
            k = inout(reg) g => _,
            a = inout(reg) a0,
            b = inout(reg) a1,
            c = inout(reg) a2,
            wv = out(reg) _,
            t = out(reg) _,
            xe = out(reg) _,
            xo = out(reg) _,
            options(nostack, readonly),
        );
    }
    [a0, a1, a2]
}

/// The partial group: `Σ w[k]·x[k]` over the natural-order halfwords of `x`.
#[inline(always)]
fn tail(w: &[i8], x: &[u32]) -> i32 {
    let mut acc = 0i32;
    for (k, &wv) in w.iter().enumerate() {
        let h = (x[k / 2] >> (16 * (k % 2))) as u16 as i16;
        acc = acc.wrapping_add(wv as i32 * h as i32);
    }
    acc
}

/// Where [`block_into`] puts each sum: channels come in pairs `(o, o1)` (`o1 == o` at an
/// odd end, whose second sums are then not put).
pub(super) trait Sink {
    /// Channels `o` and `o1` come next.
    fn channels(&mut self, o: usize, o1: usize);
    /// The sum of block pixel `i` for channel `o` (`second`: `o1`).
    fn put(&mut self, i: usize, second: bool, acc: i32);
    /// The sum of block pixel `i` for any channel `o` (a lone pixel's outputs, in
    /// channel triples: [`Sink::channels`] not called for them).
    #[inline(always)]
    fn put1(&mut self, i: usize, o: usize, acc: i32) {
        self.channels(o, o);
        self.put(i, false, acc);
    }
    /// A 2x2 tile's sums `[o·i, o·(i + 1), o1·i, o1·(i + 1)]` (`pair`: `o1 ≠ o`, else the
    /// last two are not put).
    #[inline(always)]
    fn put4(&mut self, i: usize, pair: bool, acc: [i32; 4]) {
        self.put(i, false, acc[0]);
        self.put(i + 1, false, acc[1]);
        if pair {
            self.put(i, true, acc[2]);
            self.put(i + 1, true, acc[3]);
        }
    }
}

/// The output stage of a lone last pixel: `y[(p0 + i)·cout + o] = requant(sum, rq[o])`.
struct Requant<'y> {
    rq: &'y [[i32; 3]],
    q: OutQ,
    y: &'y mut [i8],
    p0: usize,
    cout: usize,
    o: [usize; 2],
}

impl Sink for Requant<'_> {
    #[inline(always)]
    fn channels(&mut self, o: usize, o1: usize) {
        self.o = [o, o1];
    }
    #[inline(always)]
    fn put(&mut self, i: usize, second: bool, acc: i32) {
        let o = self.o[usize::from(second)];
        self.put1(i, o, acc);
    }
    #[inline(always)]
    fn put1(&mut self, i: usize, o: usize, acc: i32) {
        let at = (self.p0 + i) * self.cout + o;
        self.y[at] = Rq::new(self.rq[o], self.q).apply(acc);
    }
}

/// Raw sums: `acc[i·no + (o − o0)]` for channels `o0 .. o0 + no`.
pub(super) struct Sums<'a> {
    pub(super) acc: &'a mut [i32],
    pub(super) o0: usize,
    pub(super) no: usize,
    o: [usize; 2],
}

impl<'a> Sums<'a> {
    pub(super) fn new(acc: &'a mut [i32], o0: usize, no: usize) -> Self {
        Sums {
            acc,
            o0,
            no,
            o: [o0; 2],
        }
    }
}

impl Sink for Sums<'_> {
    #[inline(always)]
    fn channels(&mut self, o: usize, o1: usize) {
        self.o = [o - self.o0, o1 - self.o0];
    }
    #[inline(always)]
    fn put(&mut self, i: usize, second: bool, acc: i32) {
        self.acc[i * self.no + self.o[usize::from(second)]] = acc;
    }
}

/// Pixel pairs of one run of [`block`]'s sums (two runs of 2·[`RUN`] i32 on the stack).
const RUN: usize = 32;

/// `s[..len]` as initialised values.
///
/// # Safety
/// The caller wrote `s[..len]`.
unsafe fn written(s: &[MaybeUninit<i32>], len: usize) -> &[i32] {
    let s = &s[..len];
    // SAFETY: `MaybeUninit<i32>` has `i32`'s layout and the caller initialised these `len`.
    unsafe { core::slice::from_raw_parts(s.as_ptr().cast(), len) }
}

/// `y[(p0 + i)·cout + o] = requant(Σ_k w[o·n + k]·x_i[k], rq[o])` for the `np` widened
/// pixels in `xb` (pairs of `pair_words(n)` words). Callers checked `n > 0`, `w`
/// (`cout·n`), `rq` (`cout`) and `y`.
///
/// Per channel (rows a multiple of 4 long: [`dot1x4_run`]) or channel pair (others: 2x2
/// tiles) and run of up to [`RUN`] pixel pairs: the tiles' sums, each started
/// from its channel's bias (`acc + bias` wraps as `quant::requant`'s does), go to two
/// stack runs, one a channel; then each run is requantised by one `asm!` loop
/// ([`requant_run`]) with the channel's constants in registers. An odd last pixel goes
/// through [`block_into`]'s lone-pixel tiles. `fused` (the caller's [`fusable`], once a
/// conv): every channel in the short form without a floor, so rows a multiple of 4 long
/// take [`dot1x4_layer`] over all whole quads instead, and a lone pixel [`lone_fused`].
#[allow(clippy::too_many_arguments)]
pub(super) fn block(
    xb: &mut [u32],
    np: usize,
    n: usize,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
    p0: usize,
    cout: usize,
    fused: bool,
) {
    let (g, wp, nt) = (n / 4, pair_words(n), n & !3);
    let pairs = np / 2;
    let y = &mut y[p0 * cout..];
    // Uninitialised: zeroing them cost more than a small layer's tiles; each run's first
    // `2·m` are written below before they are read.
    let (mut s0, mut s1) = (
        [MaybeUninit::uninit(); 2 * RUN],
        [MaybeUninit::uninit(); 2 * RUN],
    );
    let whole = nt == n && g > 0;
    let short = ShortStage::new(q, acc_max(n));
    let kq = |o: usize| Kq::new(rq[o], q, &short);
    let mut c0 = 0;
    if whole && fused && pairs >= 2 {
        // Every channel over every quad in one `asm!`, then an odd last pair per channel.
        dot1x4_layer(w, xb, g, pairs / 2, &rq[..cout], q.zero_point, y, cout);
        c0 = pairs & !1;
    }
    while c0 < pairs {
        let m = RUN.min(pairs - c0);
        let xs = &xb[c0 * wp..][..m * wp];
        let mut o = 0;
        if whole {
            // One channel at a time in 1×4 tiles (pairs of pixel pairs); an odd last pair
            // by the Rust 2x2 tile, with the channel as both of its rows.
            let quads = m / 2;
            while o < cout {
                let w0 = &w[o * n..][..n];
                let b0 = rq[o][0];
                let yc = &mut y[2 * c0 * cout..];
                if quads > 0 {
                    dot1x4_run(w0, xs, g, quads, b0, &mut s0);
                }
                if m % 2 == 1 {
                    let [a, b, _, _] = tile2x2(w0, w0, &xs[(m - 1) * wp..][..wp], [b0; 4]);
                    s0[2 * m - 2..2 * m]
                        .copy_from_slice(&[MaybeUninit::new(a), MaybeUninit::new(b)]);
                }
                // SAFETY: `dot1x4_run` stored `s0[..4·quads]` and the odd pair's tile the
                // last 2: `s0[..2m]`.
                let r0 = unsafe { written(&s0, 2 * m) };
                requant_run(&kq(o), r0, &mut yc[o..], cout);
                o += 1;
            }
        }
        while o < cout && !whole {
            let o1 = (o + 1).min(cout - 1);
            let (w0, w1) = (&w[o * n..][..n], &w[o1 * n..][..n]);
            let (b0, b1) = (rq[o][0], rq[o1][0]);
            for (k, x) in xs.chunks_exact(wp).enumerate() {
                let [a, b, c, d] = tile2x2(w0, w1, x, [b0, b0, b1, b1]);
                s0[2 * k..2 * k + 2].copy_from_slice(&[MaybeUninit::new(a), MaybeUninit::new(b)]);
                s1[2 * k..2 * k + 2].copy_from_slice(&[MaybeUninit::new(c), MaybeUninit::new(d)]);
            }
            let yc = &mut y[2 * c0 * cout..];
            // SAFETY: the loop above wrote `s0[..2m]` and `s1[..2m]` (2 of each of its `m`
            // pairs).
            let (r0, r1) = unsafe { (written(&s0, 2 * m), written(&s1, 2 * m)) };
            requant_run(&kq(o), r0, &mut yc[o..], cout);
            if o1 != o {
                requant_run(&kq(o1), r1, &mut yc[o1..], cout);
            }
            o += 2;
        }
        c0 += m;
    }
    if np % 2 == 1 && fused {
        let x = &mut xb[pairs * wp..][..wp];
        lone_fused(x, n, w, rq, q.zero_point, &mut y[(np - 1) * cout..][..cout]);
    } else if np % 2 == 1 {
        let mut out = Requant {
            rq,
            q,
            y,
            p0: np - 1,
            cout,
            o: [0; 2],
        };
        block_into(&xb[pairs * wp..], 1, n, w, 0, cout, &mut out);
    }
}

/// A lone last pixel `x` (its pair's `pair_words(n)` words) of a layer whose every channel
/// takes the short form without a floor ([`fusable`]). Rows a multiple of 8 long starting
/// at word boundaries (the 1×1 layers of stage 4 and the last conv at 32 px) take
/// [`matvec2`] over channel pairs, the pixel's words first compacted in place (its pair
/// partner's slots are not read); other rows channel triples by [`dot1x3`] (a last one or
/// two by [`dot2x1`]), each sum requantised from its table row by
/// [`dsp::short_row`](super::dsp::short_row) straight into `y`, the pixel's `cout` bytes.
fn lone_fused(x: &mut [u32], n: usize, w: &[i8], rq: &[[i32; 3]], zp: i32, y: &mut [i8]) {
    let (g, nt, cout) = (n / 4, n & !3, rq.len());
    let pairs = cout / 2;
    if n.is_multiple_of(8) && pairs > 0 && (w.as_ptr() as usize).is_multiple_of(4) {
        // Pixel 0's words of group `j` are `x[4j..4j + 2]`: to `x[2j..2j + 2]`, in
        // ascending order (each destination is at or below its source and past every
        // source still to be read).
        for j in 1..g {
            x.copy_within(4 * j..4 * j + 2, 2 * j);
        }
        let zp2 = 2 * zp + 1;
        matvec2(
            &x[..2 * g],
            n,
            w,
            &rq[..2 * pairs],
            zp2,
            &mut y[..2 * pairs],
        );
        if cout % 2 == 1 {
            // The last channel: its row as both of a pair's, on the compacted words (one
            // group of 4 every 2 words: the same `dot2x1` on a view that `g` groups span).
            let o = cout - 1;
            let wr = &w[o * n..][..n];
            let mut acc = 0i32;
            for (j, v) in wr.chunks_exact(4).enumerate() {
                let v = u32::from_le_bytes([v[0] as u8, v[1] as u8, v[2] as u8, v[3] as u8]);
                acc = smlad(
                    sxtb16_ror8(v),
                    x[2 * j + 1],
                    smlad(sxtb16(v), x[2 * j], acc),
                );
            }
            y[o] = super::dsp::short_z(rq[o], zp2, acc);
        }
        return;
    }
    let h0 = &x[4 * g..];
    let tails = |ws: &[i8], k: usize| match nt < n {
        true => tail(&ws[k * n + nt..(k + 1) * n], h0),
        false => 0,
    };
    let t = cout - cout % 3;
    let rows = w[..t * n].chunks_exact(3 * n);
    for ((ws, rq3), y3) in rows
        .zip(rq[..t].chunks_exact(3))
        .zip(y[..t].chunks_exact_mut(3))
    {
        let acc = dot1x3(ws, n, x, g);
        for k in 0..3 {
            y3[k] = super::dsp::short_row(rq3[k], zp, acc[k].wrapping_add(tails(ws, k)));
        }
    }
    if t < cout {
        // One or two channels: the pair's rows (`o1 == o` for one).
        let o1 = cout - 1;
        let ws = &w[t * n..][..(cout - t) * n];
        let [a, c] = dot2x1(&ws[..n], &ws[(o1 - t) * n..][..n], x, g);
        y[t] = super::dsp::short_row(rq[t], zp, a.wrapping_add(tails(ws, 0)));
        if o1 != t {
            y[o1] = super::dsp::short_row(rq[o1], zp, c.wrapping_add(tails(ws, 1)));
        }
    }
}

/// One step of [`matvec2`] as `asm!` template text: 8 inputs (4 widened words of `x` by one
/// `LDM`), then for each of the two rows 8 weights by one `LDRD`, 4 `SXTB16` and 4 `SMLAD`:
/// 19 instructions for 16 MACs. Registers: `x` words r0–r3, weights r4/r5, scratch r8,
/// sums r9/r10, pointers `x` r11, rows r12 and lr.
macro_rules! matvec_step {
    () => {
        concat!(
            "ldm r11!, {{r0, r1, r2, r3}}\n",
            "ldrd r4, r5, [r12], #8\n",
            "sxtb16 r8, r4, ror #8\n",
            "sxtb16 r4, r4\n",
            "smlad r9, r4, r0, r9\n",
            "smlad r9, r8, r1, r9\n",
            "sxtb16 r8, r5, ror #8\n",
            "sxtb16 r5, r5\n",
            "smlad r9, r5, r2, r9\n",
            "smlad r9, r8, r3, r9\n",
            "ldrd r4, r5, [lr], #8\n",
            "sxtb16 r8, r4, ror #8\n",
            "sxtb16 r4, r4\n",
            "smlad r10, r4, r0, r10\n",
            "smlad r10, r8, r1, r10\n",
            "sxtb16 r8, r5, ror #8\n",
            "sxtb16 r5, r5\n",
            "smlad r10, r5, r2, r10\n",
            "smlad r10, r8, r3, r10\n",
        )
    };
}

/// The short output stage of one sum as `asm!` template text (the sum in `$s`, started
/// from the bias, becomes the byte; the row's `mult` and `shift` in `$m`, `$e`, `zp2 = 2·zp
/// + 1` in r8; `$k` and `$e` are scratch): [`short_z`](super::dsp::short_z)'s steps, the
/// five of `dsp::short_asm` written out (a path-imported macro does not expand inside
/// `concat!`).
#[rustfmt::skip]
macro_rules! matvec_requant {
    ($s:literal, $k:literal, $m:literal, $e:literal) => {
        concat!(
            "mvn ", $e, ", ", $e, "\n",
            "lsl ", $k, ", r8, ", $e, "\n",
            "add ", $e, ", ", $e, ", #1\n",
            "lsl ", $s, ", ", $s, ", #1\n",
            "smmlar ", $k, ", ", $s, ", ", $m, ", ", $k, "\n",
            "sub ", $k, ", ", $k, ", ", $s, ", lsr #31\n",
            "asr ", $k, ", ", $k, ", ", $e, "\n",
            "ssat ", $s, ", #8, ", $k, "\n",
        )
    };
}

/// A lone pixel times weight rows two at a time, the output stage fused, in one `asm!`:
/// `y[o] = short(Σ_k w[o·n + k]·x[k] + bias_o)` for the `y.len() = rq.len()` (even) channels,
/// `x` the pixel's widened words compacted (`[v0, v2]`, `[v1, v3]` per group of 4, groups
/// consecutive: `n / 2` words), `w` 4-aligned with rows of `n` bytes (`n` a multiple of 8),
/// every row in the short form without a floor (others get wrong bytes, nothing worse),
/// `zp2 = 2·zp + 1`. Per 8 inputs and 2 rows one `LDM` of 4 input words shared by both
/// rows, an `LDRD` of each row's 8 weights, 8 `SXTB16` and 8 `SMLAD` (19 for 16 MACs; the
/// 1×3 tile of [`dot1x3`] spends 17 for 12), four steps a loop pass; per pair of rows ~45
/// more (the loop state on the stack, the output stage from the rows, `LDM` of both).
fn matvec2(x: &[u32], n: usize, w: &[i8], rq: &[[i32; 3]], zp2: i32, y: &mut [i8]) {
    let pairs = y.len() / 2;
    let steps = n / 8;
    assert!(
        steps > 0
            && n.is_multiple_of(8)
            && pairs > 0
            && rq.len() == 2 * pairs
            && y.len() == 2 * pairs
            && (w.as_ptr() as usize).is_multiple_of(4)
    );
    let (x, w) = (&x[..4 * steps], &w[..2 * pairs * n]);
    let xend = x.as_ptr_range().end;
    // The pass of each pair: with `steps % 4 ≠ 0` the odd steps first, then passes of 4
    // steps until `x`'s end; else the passes alone (`steps ≥ 4`), of 8 steps where `steps`
    // is a multiple of 8 (one loop test per 128 MACs: the last conv's rows of 192).
    macro_rules! run {
        ([$($lead:expr,)*], [$($more:expr,)*]) => {
            // SAFETY: the block of 32 bytes below `sp` (`SUB sp`, 8-aligned as before,
            // restored by the last `ADD`) holds the loop state: x, steps, x's end, the table
            // pointer, zp2, n, pairs left, the output pointer. Each of the `pairs ≥ 1` passes
            // runs `steps ≥ 1` steps (`steps % 4` first, as the flags from `LSLS #31` say: the
            // steps leave N and C alone; without that prologue `steps` is a multiple of 4,
            // at least 4, or of 8 for passes of 8; then passes until `x`'s end): each step
            // reads 4 words at the x pointer (from `x` to its end: `x` holds `4·steps` words,
            // 4-aligned as `LDM` needs) and 8 bytes at each row pointer (4-aligned: `w` is and `n` is a multiple
            // of 8, as `LDRD` needs), the rows `2p` and `2p + 1` of `w`, which holds
            // `2·pairs` rows of `n` bytes; the two sums start from the biases of table rows
            // `2p` and `2p + 1` (words 0 and 3 at the table pointer), whose 6 words are then
            // read (`rq` holds `2·pairs` rows), and 2 bytes are stored at `y + 2p` (`y` holds
            // `2·pairs` bytes). Each register named in the text is a clobbered operand; the
            // flags and perhaps APSR.Q change.
            unsafe {
                core::arch::asm!(
                    "sub sp, sp, #32",
                    "strd r0, r1, [sp]",
                    "strd r2, r3, [sp, #8]",
                    "strd r4, r5, [sp, #16]",
                    "strd r8, r9, [sp, #24]",
                    "add lr, r12, r5",
                    // A pair of rows: the sums from the biases.
                    "1:",
                    "ldr r11, [sp]",
                    "ldr r8, [sp, #12]",
                    "ldr r9, [r8]",
                    "ldr r10, [r8, #12]",
                    $($lead,)*
                    "5:",
                    matvec_step!(),
                    matvec_step!(),
                    matvec_step!(),
                    matvec_step!(),
                    $($more,)*
                    "6:",
                    "ldr r8, [sp, #8]",
                    "cmp r11, r8",
                    "bne 5b",
                    // The two outputs.
                    "ldr r8, [sp, #12]",
                    "ldm r8!, {{r0, r1, r2, r3, r4, r5}}",
                    "str r8, [sp, #12]",
                    "ldr r8, [sp, #16]",
                    matvec_requant!("r9", "r0", "r1", "r2"),
                    matvec_requant!("r10", "r3", "r4", "r5"),
                    "ldr r8, [sp, #28]",
                    "strb r9, [r8], #1",
                    "strb r10, [r8], #1",
                    "str r8, [sp, #28]",
                    // The next pair's rows start where this pair's second ended.
                    "mov r12, lr",
                    "ldr r8, [sp, #20]",
                    "add lr, lr, r8",
                    "ldr r8, [sp, #24]",
                    "subs r8, r8, #1",
                    "str r8, [sp, #24]",
                    "bne 1b",
                    "add sp, sp, #32",
                    inout("r0") x.as_ptr() => _,
                    inout("r1") steps => _,
                    inout("r2") xend => _,
                    inout("r3") rq.as_ptr() => _,
                    inout("r4") zp2 => _,
                    inout("r5") n => _,
                    inout("r8") pairs => _,
                    inout("r9") y.as_mut_ptr() => _,
                    out("r10") _,
                    out("r11") _,
                    inout("r12") w.as_ptr() => _,
                    out("lr") _,
                );
            }
        };
    }
    if steps.is_multiple_of(8) {
        run!(
            [],
            [
                matvec_step!(),
                matvec_step!(),
                matvec_step!(),
                matvec_step!(),
            ]
        );
    } else if steps.is_multiple_of(4) {
        run!([], []);
    } else {
        run!(
            [
                "ldr r8, [sp, #4]",
                "lsls r8, r8, #31",
                "bcc 3f",
                matvec_step!(),
                matvec_step!(),
                "3:",
                "bpl 4f",
                matvec_step!(),
                "4:",
                "b 6f",
            ],
            []
        );
    }
}

/// `Σ_k w[o·n + k]·x_i[k]` for channels `o0 .. o1` and the `np` widened pixels in `xb`, each
/// handed to `out`. Callers checked `w` (`o1·n`).
pub(super) fn block_into(
    xb: &[u32],
    np: usize,
    n: usize,
    w: &[i8],
    o0: usize,
    o_end: usize,
    out: &mut impl Sink,
) {
    let (g, wp, nt) = (n / 4, pair_words(n), n & !3);
    let np2 = np & !1;
    // Rows a multiple of 4 long: 1×4 tiles over the pixel quads, a channel at a time, their
    // sums through a stack run; then 2x2 tiles over a last pixel pair; an odd last pixel
    // afterwards, by channel triples.
    let quads = if nt == n && g > 0 { np2 / 4 } else { 0 };
    let mut s = [MaybeUninit::uninit(); 2 * RUN];
    if quads > 0 {
        for o in o0..o_end {
            out.channels(o, o);
            let w0 = &w[o * n..][..n];
            let mut q0 = 0;
            while q0 < quads {
                let qr = (RUN / 2).min(quads - q0);
                dot1x4_run(w0, &xb[2 * q0 * wp..][..2 * qr * wp], g, qr, 0, &mut s);
                // SAFETY: `dot1x4_run` stored `s[..4·qr]`.
                let r = unsafe { written(&s, 4 * qr) };
                for (i, &v) in r.iter().enumerate() {
                    out.put(4 * q0 + i, false, v);
                }
                q0 += qr;
            }
        }
    }
    let mut o = o0;
    while np2 > 4 * quads && o < o_end {
        let o1 = (o + 1).min(o_end - 1);
        out.channels(o, o1);
        let (w0, w1) = (&w[o * n..][..n], &w[o1 * n..][..n]);
        let mut i = 4 * quads;
        while i < np2 {
            let x = &xb[(i / 2) * wp..][..wp];
            out.put4(i, o1 != o, tile2x2(w0, w1, x, [0; 4]));
            i += 2;
        }
        o += 2;
    }
    if np2 == np {
        return;
    }
    let i = np2;
    let x = &xb[(i / 2) * wp..][..wp];
    let h0 = &x[4 * g..];
    let mut o = o0;
    while o + 3 <= o_end {
        let ws = &w[o * n..][..3 * n];
        let mut acc = dot1x3(ws, n, x, g);
        if nt < n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = a.wrapping_add(tail(&ws[k * n + nt..(k + 1) * n], h0));
            }
        }
        out.put1(i, o, acc[0]);
        out.put1(i, o + 1, acc[1]);
        out.put1(i, o + 2, acc[2]);
        o += 3;
    }
    while o < o_end {
        let o1 = (o + 1).min(o_end - 1);
        let (w0, w1) = (&w[o * n..][..n], &w[o1 * n..][..n]);
        let [mut a, mut c] = dot2x1(w0, w1, x, g);
        if nt < n {
            a = a.wrapping_add(tail(&w0[nt..], h0));
            c = c.wrapping_add(tail(&w1[nt..], h0));
        }
        out.put1(i, o, a);
        if o1 != o {
            out.put1(i, o1, c);
        }
        o += 2;
    }
}
