//! Integer kernels: an int16×int16→int32 GEMM (AVX2 `vpmaddwd`, or portable Rust)
//! and the requantization that turns its int32 accumulators into int8.
//!
//! Both instruction sets compute the same integers: sums of products are exact in
//! int32 (the loader checks that no accumulator can overflow) and the fixed-point
//! requantization is exact 64-bit arithmetic, so the results are identical, not close.

use std::ops::Range;

use crate::int8::Requant;

/// Which kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust (auto-vectorized where the compiler can).
    Portable,
    /// x86-64 AVX2, chosen at run time when the CPU has it.
    Avx2,
}

impl Isa {
    /// The best instruction set this CPU offers.
    pub fn detect() -> Isa {
        if Isa::Avx2.available() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
        }
    }
}

/// Output channels per packed block: two AVX2 registers of eight int32 lanes.
pub const BLOCK: usize = 16;

/// A weight matrix `[out][k]` packed for the micro-kernel:
/// `[out / 16][k / 2][16 channels][2]` int16, zero-padded in both dimensions.
#[derive(Debug, Clone)]
pub struct Packed {
    pub out: usize,
    pub k: usize,
    /// `k` rounded up to even: the row stride of the activation matrix.
    pub kp: usize,
    pub blocks: usize,
    data: Vec<i16>,
}

impl Packed {
    /// Packs row-major int8 weights `[out][k]`.
    pub fn new(w: &[i8], out: usize, k: usize) -> Packed {
        let kp = k.div_ceil(2) * 2;
        let blocks = out.div_ceil(BLOCK);
        let mut data = vec![0i16; blocks * kp * BLOCK];
        for o in 0..out {
            let (b, c) = (o / BLOCK, o % BLOCK);
            for (i, &x) in w[o * k..(o + 1) * k].iter().enumerate() {
                data[b * kp * BLOCK + (i / 2) * 2 * BLOCK + c * 2 + i % 2] = x as i16;
            }
        }
        Packed {
            out,
            k,
            kp,
            blocks,
            data,
        }
    }

    /// Row stride of the accumulator matrix [`gemm`] writes.
    pub fn acc_stride(&self) -> usize {
        self.blocks * BLOCK
    }
}

/// `acc[r][o] = Σ_k a[r][k] * w[o][k]` for `rows` rows of `a` (stride `w.kp`).
pub fn gemm(isa: Isa, a: &[i16], rows: usize, w: &Packed, acc: &mut [i32]) {
    assert!(a.len() >= rows * w.kp && acc.len() >= rows * w.acc_stride());
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.available() => unsafe { gemm_avx2(a, rows, w, acc) },
        _ => gemm_portable(a, rows, w, acc),
    }
}

fn gemm_portable(a: &[i16], rows: usize, w: &Packed, acc: &mut [i32]) {
    let (kp, stride) = (w.kp, w.acc_stride());
    for r in 0..rows {
        let row = &a[r * kp..(r + 1) * kp];
        for b in 0..w.blocks {
            let wb = &w.data[b * kp * BLOCK..(b + 1) * kp * BLOCK];
            let mut sum = [0i32; BLOCK];
            for (pair, wj) in row.chunks_exact(2).zip(wb.chunks_exact(2 * BLOCK)) {
                let (x0, x1) = (pair[0] as i32, pair[1] as i32);
                for c in 0..BLOCK {
                    sum[c] += x0 * wj[2 * c] as i32 + x1 * wj[2 * c + 1] as i32;
                }
            }
            acc[r * stride + b * BLOCK..r * stride + (b + 1) * BLOCK].copy_from_slice(&sum);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemm_avx2(a: &[i16], rows: usize, w: &Packed, acc: &mut [i32]) {
    use std::arch::x86_64::*;
    let (kp, stride, pairs) = (w.kp, w.acc_stride(), w.kp / 2);
    let ap = a.as_ptr();
    let out = acc.as_mut_ptr();
    for b in 0..w.blocks {
        let wb = w.data.as_ptr().add(b * kp * BLOCK);
        let mut r = 0;
        // Four rows at a time: 8 accumulators, two weight loads per k pair.
        while r + 4 <= rows {
            let mut s = [_mm256_setzero_si256(); 8];
            for j in 0..pairs {
                let w0 = _mm256_loadu_si256(wb.add(j * 2 * BLOCK) as *const __m256i);
                let w1 = _mm256_loadu_si256(wb.add(j * 2 * BLOCK + BLOCK) as *const __m256i);
                for i in 0..4 {
                    let x = _mm256_set1_epi32(
                        (ap.add((r + i) * kp + 2 * j) as *const i32).read_unaligned(),
                    );
                    s[2 * i] = _mm256_add_epi32(s[2 * i], _mm256_madd_epi16(x, w0));
                    s[2 * i + 1] = _mm256_add_epi32(s[2 * i + 1], _mm256_madd_epi16(x, w1));
                }
            }
            for i in 0..4 {
                let o = out.add((r + i) * stride + b * BLOCK);
                _mm256_storeu_si256(o as *mut __m256i, s[2 * i]);
                _mm256_storeu_si256(o.add(8) as *mut __m256i, s[2 * i + 1]);
            }
            r += 4;
        }
        while r < rows {
            let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for j in 0..pairs {
                let w0 = _mm256_loadu_si256(wb.add(j * 2 * BLOCK) as *const __m256i);
                let w1 = _mm256_loadu_si256(wb.add(j * 2 * BLOCK + BLOCK) as *const __m256i);
                let x = _mm256_set1_epi32((ap.add(r * kp + 2 * j) as *const i32).read_unaligned());
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(x, w0));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(x, w1));
            }
            let o = out.add(r * stride + b * BLOCK);
            _mm256_storeu_si256(o as *mut __m256i, s0);
            _mm256_storeu_si256(o.add(8) as *mut __m256i, s1);
            r += 1;
        }
    }
}

/// `a / count` rounded half away from zero, as TFLite's integer AVERAGE_POOL_2D:
/// `(a ± count / 2) / count` with C's truncating division. `count` > 0.
#[inline]
pub fn div_round_away(a: i32, count: i32) -> i32 {
    if a > 0 {
        (a + count / 2) / count
    } else {
        (a - count / 2) / count
    }
}

/// Per-channel bias, multipliers and clamps of one layer's output, laid out for
/// both the scalar and the vector path.
#[derive(Debug, Clone)]
pub struct Requantizer {
    pub channels: usize,
    bias: Vec<i32>,
    rq: Vec<Requant>,
    zero_point: i32,
    lo: i32,
    hi: i32,
    /// Vector path constants per 8 channels (only when every shift is in [32, 62]).
    vector: Option<VectorConsts>,
}

#[derive(Debug, Clone)]
struct VectorConsts {
    /// Channels padded to a multiple of 8.
    bias: Vec<i32>,
    mult: Vec<i32>,
    /// For even and odd lanes of each group of 8: 2^(s-1) + 2^62, s, 2^(62-s).
    round: Vec<i64>,
    shift: Vec<i64>,
    sub: Vec<i64>,
}

impl Requantizer {
    pub fn new(bias: Vec<i32>, rq: Vec<Requant>, zero_point: i32, lo: i32, hi: i32) -> Requantizer {
        let channels = bias.len();
        let vector = rq.iter().all(|r| (32..=62).contains(&r.shift)).then(|| {
            let padded = channels.div_ceil(8) * 8;
            let mut v = VectorConsts {
                bias: vec![0; padded],
                mult: vec![0; padded],
                round: vec![0; padded],
                shift: vec![0; padded],
                sub: vec![0; padded],
            };
            for c in 0..padded {
                let r = rq.get(c).copied().unwrap_or(Requant {
                    multiplier: 0,
                    shift: 62,
                });
                // Even lanes (0, 2, 4, 6) first, then odd ones, per group of 8.
                let slot = (c / 8) * 8
                    + if c % 2 == 0 {
                        (c % 8) / 2
                    } else {
                        4 + (c % 8) / 2
                    };
                v.bias[c] = bias.get(c).copied().unwrap_or(0);
                v.mult[c] = r.multiplier;
                v.round[slot] = (1i64 << (r.shift - 1)) + (1i64 << 62);
                v.shift[slot] = r.shift as i64;
                v.sub[slot] = 1i64 << (62 - r.shift);
            }
            v
        });
        Requantizer {
            channels,
            bias,
            rq,
            zero_point,
            lo,
            hi,
            vector,
        }
    }

    /// One output value from an accumulator of channel `c`.
    #[inline]
    pub fn one(&self, acc: i32, c: usize) -> i8 {
        let v = self.rq[c].apply(acc.wrapping_add(self.bias[c])) + self.zero_point as i64;
        v.clamp(self.lo as i64, self.hi as i64) as i8
    }

    /// Requantizes `rows` rows of `acc` (row stride `stride`) into `out` (row stride `channels`).
    pub fn rows(&self, isa: Isa, acc: &[i32], rows: usize, stride: usize, out: &mut [i8]) {
        assert!(
            acc.len() >= rows.saturating_sub(1) * stride + self.channels
                && out.len() >= rows * self.channels
        );
        #[cfg(target_arch = "x86_64")]
        if let (Isa::Avx2, Some(v)) = (isa, &self.vector) {
            if Isa::Avx2.available() && stride >= v.bias.len() {
                unsafe { self.rows_avx2(v, acc, rows, stride, out) };
                return;
            }
        }
        let _ = isa;
        for r in 0..rows {
            let a = &acc[r * stride..r * stride + self.channels];
            for (c, (o, &x)) in out[r * self.channels..(r + 1) * self.channels]
                .iter_mut()
                .zip(a)
                .enumerate()
            {
                *o = self.one(x, c);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(
        &self,
        v: &VectorConsts,
        acc: &[i32],
        rows: usize,
        stride: usize,
        out: &mut [i8],
    ) {
        use std::arch::x86_64::*;
        let full = self.channels / 8;
        let zp = _mm256_set1_epi32(self.zero_point);
        let (lo, hi) = (_mm256_set1_epi32(self.lo), _mm256_set1_epi32(self.hi));
        for r in 0..rows {
            let a = acc.as_ptr().add(r * stride);
            let o = out.as_mut_ptr().add(r * self.channels);
            for g in 0..full {
                let c = g * 8;
                let x = _mm256_add_epi32(
                    _mm256_loadu_si256(a.add(c) as *const __m256i),
                    _mm256_loadu_si256(v.bias.as_ptr().add(c) as *const __m256i),
                );
                let m = _mm256_loadu_si256(v.mult.as_ptr().add(c) as *const __m256i);
                let lane = |p: &[i64], half: usize| {
                    _mm256_loadu_si256(p.as_ptr().add(c + 4 * half) as *const __m256i)
                };
                // Signed 32x32→64 products of the even lanes, then of the odd ones.
                let even = _mm256_mul_epi32(x, m);
                let odd = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32));
                // (p + 2^(s-1) + 2^62) is positive, so a logical shift is exact; remove 2^(62-s) after.
                let even = _mm256_sub_epi64(
                    _mm256_srlv_epi64(_mm256_add_epi64(even, lane(&v.round, 0)), lane(&v.shift, 0)),
                    lane(&v.sub, 0),
                );
                let odd = _mm256_sub_epi64(
                    _mm256_srlv_epi64(_mm256_add_epi64(odd, lane(&v.round, 1)), lane(&v.shift, 1)),
                    lane(&v.sub, 1),
                );
                let y = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0b1010_1010);
                let y = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(y, zp), lo), hi);
                let p16 =
                    _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
                _mm_storel_epi64(o.add(c) as *mut __m128i, _mm_packs_epi16(p16, p16));
            }
            for c in full * 8..self.channels {
                *o.add(c) = self.one(*a.add(c), c);
            }
        }
    }
}

/// A depthwise convolution's weights (one `k×k` filter per channel): `[tap][channel]`
/// int16, channels padded to a multiple of 16, so each tap is one contiguous row the
/// compiler vectorizes across channels. Depthwise layers run here rather than as
/// `channels` one-column GEMMs, whose packing wastes 15 of every 16 lanes.
#[derive(Debug, Clone)]
pub struct Depthwise {
    pub channels: usize,
    /// Channels padded to a multiple of [`BLOCK`]: the accumulator row stride.
    pub cp: usize,
    pub taps: usize,
    data: Vec<i16>,
}

/// Where a depthwise convolution reads and writes: an `h×w×channels` channels-last
/// image, a `k×k` window, zero padding `pad` on every side.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Depthwise {
    /// `w` is `[channel][ky][kx]`, as the int8 graph stores a depthwise weight.
    pub fn new(w: &[i8], channels: usize, taps: usize) -> Depthwise {
        let cp = channels.div_ceil(BLOCK) * BLOCK;
        let mut data = vec![0i16; taps * cp];
        for c in 0..channels {
            for t in 0..taps {
                data[t * cp + c] = w[c * taps + t] as i16;
            }
        }
        Depthwise {
            channels,
            cp,
            taps,
            data,
        }
    }
}

/// The int32 sums of output rows `rows` of one image's depthwise convolution: `acc`
/// holds `rows.len() * ow` rows of stride `cp`, each the sums of `(x - zp) * w` over one
/// pixel's window. Taps outside the image add nothing (padding holds the zero point).
pub fn depthwise(
    isa: Isa,
    x: &[i8],
    win: Window,
    rows: Range<usize>,
    zp: i32,
    w: &Depthwise,
    acc: &mut [i32],
) {
    assert!(
        x.len() >= win.h * win.w * w.channels
            && rows.end <= win.oh
            && acc.len() >= rows.len() * win.ow * w.cp
            && w.taps == win.k * win.k
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && Isa::Avx2.available() {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { depthwise_avx2(x, win, rows, zp, w, acc) };
        return;
    }
    let _ = isa;
    depthwise_body(x, win, rows, zp, w, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_avx2(
    x: &[i8],
    win: Window,
    rows: Range<usize>,
    zp: i32,
    w: &Depthwise,
    acc: &mut [i32],
) {
    depthwise_body(x, win, rows, zp, w, acc);
}

// One body for both instruction sets: the AVX2 entry point only lets the compiler use
// wider vectors, so both compute the same integers.
#[inline(always)]
fn depthwise_body(
    x: &[i8],
    win: Window,
    rows: Range<usize>,
    zp: i32,
    w: &Depthwise,
    acc: &mut [i32],
) {
    let (c, cp) = (w.channels, w.cp);
    let zp = zp as i16;
    // The taps of one output pixel's window inside the image: (input offset, tap).
    let mut taps: Vec<(usize, usize)> = Vec::with_capacity(w.taps);
    for (r, oy) in rows.enumerate() {
        for ox in 0..win.ow {
            taps.clear();
            for ky in 0..win.k {
                let iy = (oy * win.stride + ky) as isize - win.pad as isize;
                for kx in 0..win.k {
                    let ix = (ox * win.stride + kx) as isize - win.pad as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < win.h && (ix as usize) < win.w {
                        taps.push(((iy as usize * win.w + ix as usize) * c, ky * win.k + kx));
                    }
                }
            }
            // Sixteen channels at a time, their sums kept in registers over every tap.
            let a = &mut acc[(r * win.ow + ox) * cp..][..cp];
            for (b, a) in a.chunks_exact_mut(BLOCK).enumerate() {
                let c0 = b * BLOCK;
                let len = BLOCK.min(c - c0);
                let mut sum = [0i32; BLOCK];
                if len == BLOCK {
                    for &(at, t) in &taps {
                        let xs: &[i8; BLOCK] = x[at + c0..][..BLOCK].try_into().unwrap();
                        let ws: &[i16; BLOCK] = w.data[t * cp + c0..][..BLOCK].try_into().unwrap();
                        // |x - zp| <= 255 and |w| <= 128, so each product fits in i16.
                        for i in 0..BLOCK {
                            sum[i] += ((xs[i] as i16 - zp) * ws[i]) as i32;
                        }
                    }
                } else {
                    for &(at, t) in &taps {
                        let xs = &x[at + c0..][..len];
                        let ws = &w.data[t * cp + c0..][..len];
                        for ((s, &xv), &wv) in sum.iter_mut().zip(xs).zip(ws) {
                            *s += ((xv as i16 - zp) * wv) as i32;
                        }
                    }
                }
                a.copy_from_slice(&sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::quantize_multiplier;

    /// A small deterministic generator, so the tests need no extra crate.
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u32) as i32
        }
    }

    fn reference_gemm(
        a: &[i16],
        rows: usize,
        kp: usize,
        w: &[i8],
        out: usize,
        k: usize,
    ) -> Vec<i32> {
        let mut acc = vec![0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                acc[r * out + o] = (0..k)
                    .map(|i| a[r * kp + i] as i32 * w[o * k + i] as i32)
                    .sum();
            }
        }
        acc
    }

    #[test]
    fn gemm_matches_the_reference_on_every_isa() {
        let mut rng = Lcg(1);
        for (rows, out, k) in [
            (1, 1, 1),
            (5, 10, 9),
            (7, 33, 50),
            (4, 16, 2),
            (13, 17, 301),
        ] {
            let w: Vec<i8> = (0..out * k).map(|_| rng.range(-127, 127) as i8).collect();
            let packed = Packed::new(&w, out, k);
            let mut a = vec![0i16; rows * packed.kp];
            for r in 0..rows {
                for i in 0..k {
                    a[r * packed.kp + i] = rng.range(-255, 255) as i16;
                }
            }
            let expected = reference_gemm(&a, rows, packed.kp, &w, out, k);
            for isa in [Isa::Portable, Isa::detect()] {
                let mut acc = vec![0; rows * packed.acc_stride()];
                gemm(isa, &a, rows, &packed, &mut acc);
                for r in 0..rows {
                    assert_eq!(
                        &acc[r * packed.acc_stride()..r * packed.acc_stride() + out],
                        &expected[r * out..(r + 1) * out],
                        "{isa:?} {rows}x{out}x{k}"
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_matches_a_direct_convolution_on_every_isa() {
        let mut rng = Lcg(3);
        // (channels, h, w, k, stride, pad): odd channel counts, strides, padding.
        for (c, h, w, k, stride, pad) in [
            (1, 5, 5, 3, 1, 1),
            (17, 7, 6, 3, 2, 1),
            (32, 8, 8, 3, 1, 0),
            (5, 9, 9, 5, 2, 2),
        ] {
            let (oh, ow) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let win = Window {
                h,
                w,
                oh,
                ow,
                k,
                stride,
                pad,
            };
            let x: Vec<i8> = (0..h * w * c).map(|_| rng.range(-128, 127) as i8).collect();
            let wt: Vec<i8> = (0..c * k * k).map(|_| rng.range(-128, 127) as i8).collect();
            let zp = rng.range(-128, 127);
            let dw = Depthwise::new(&wt, c, k * k);
            for isa in [Isa::Portable, Isa::detect()] {
                let mut acc = vec![0; oh * ow * dw.cp];
                depthwise(isa, &x, win, 0..oh, zp, &dw, &mut acc);
                // Computed in two row ranges, as two threads do, the sums are the same.
                let mut halves = vec![0; oh * ow * dw.cp];
                let (top, bottom) = halves.split_at_mut(oh / 2 * ow * dw.cp);
                depthwise(isa, &x, win, 0..oh / 2, zp, &dw, top);
                depthwise(isa, &x, win, oh / 2..oh, zp, &dw, bottom);
                assert_eq!(acc, halves);
                for (oy, ox, ch) in (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| (y, x)))
                    .flat_map(|(y, x)| (0..c).map(move |ch| (y, x, ch)))
                {
                    let mut want = 0i32;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let xv = x[(iy as usize * w + ix as usize) * c + ch] as i32;
                                want += (xv - zp) * wt[ch * k * k + ky * k + kx] as i32;
                            }
                        }
                    }
                    assert_eq!(
                        acc[(oy * ow + ox) * dw.cp + ch],
                        want,
                        "{isa:?} c={c} k={k} s={stride} p={pad} at ({oy},{ox},{ch})"
                    );
                }
            }
        }
    }

    #[test]
    fn vector_requantization_equals_scalar() {
        let mut rng = Lcg(2);
        let channels = 21;
        let rq: Vec<Requant> = (0..channels)
            .map(|c| quantize_multiplier(1e-4 * (c as f64 + 1.0) * 1.7).unwrap())
            .collect();
        let bias: Vec<i32> = (0..channels)
            .map(|_| rng.range(-100_000, 100_000))
            .collect();
        let q = Requantizer::new(bias.clone(), rq.clone(), -5, -128, 127);
        assert!(q.vector.is_some());
        let rows = 9;
        let stride = 32;
        let acc: Vec<i32> = (0..rows * stride)
            .map(|_| rng.range(-2_000_000, 2_000_000))
            .collect();
        let mut scalar = vec![0i8; rows * channels];
        let mut vector = vec![0i8; rows * channels];
        q.rows(Isa::Portable, &acc, rows, stride, &mut scalar);
        q.rows(Isa::detect(), &acc, rows, stride, &mut vector);
        assert_eq!(scalar, vector);
        // And against real arithmetic: within rounding of the exact product.
        for r in 0..rows {
            for c in 0..channels {
                let real = (acc[r * stride + c] + bias[c]) as f64 * rq[c].real() - 5.0;
                let expected = (real + 0.5).floor().clamp(-128.0, 127.0) as i8;
                assert_eq!(scalar[r * channels + c], expected, "row {r} channel {c}");
            }
        }
    }
}
