//! The vector operations of the wide walk, per instruction set. Each is inlined into a
//! function compiled for its set (`explain_avx512`, `explain_avx2`); called anywhere
//! else they are undefined behaviour on a CPU without it, hence `unsafe`.

use std::arch::x86_64::*;

/// Most lanes of any set (sizes the buffers the walk stores whole vectors into).
pub(super) const LANES_MAX: usize = 8;

pub(super) trait Lanes {
    /// f64 values per vector.
    const LANES: usize;
    /// `LANES` f64.
    type Values: Copy;
    /// One bit or lane per value: set where a comparison holds.
    type Mask: Copy;
    /// Every lane set.
    unsafe fn all() -> Self::Mask;
    unsafe fn splat(value: f64) -> Self::Values;
    unsafe fn load(from: *const f64) -> Self::Values;
    unsafe fn store(to: *mut f64, values: Self::Values);
    unsafe fn add(a: Self::Values, b: Self::Values) -> Self::Values;
    /// Where a value goes right at a split: `!(x <= threshold)`, so a NaN goes right.
    unsafe fn right(x: Self::Values, threshold: f64) -> Self::Mask;
    /// `if_set` in the lanes `mask` sets, `if_clear` in the others.
    unsafe fn select(mask: Self::Mask, if_clear: Self::Values, if_set: Self::Values) -> Self::Values;
    unsafe fn and(a: Self::Mask, b: Self::Mask) -> Self::Mask;
    /// `!a & b`.
    unsafe fn and_not(a: Self::Mask, b: Self::Mask) -> Self::Mask;
}

pub(super) struct Avx512;

impl Lanes for Avx512 {
    const LANES: usize = 8;
    type Values = __m512d;
    type Mask = __mmask8;
    #[inline(always)]
    unsafe fn all() -> __mmask8 {
        u8::MAX
    }
    #[inline(always)]
    unsafe fn splat(value: f64) -> __m512d {
        unsafe { _mm512_set1_pd(value) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f64) -> __m512d {
        unsafe { _mm512_loadu_pd(from) }
    }
    #[inline(always)]
    unsafe fn store(to: *mut f64, values: __m512d) {
        unsafe { _mm512_storeu_pd(to, values) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
        unsafe { _mm512_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn right(x: __m512d, threshold: f64) -> __mmask8 {
        unsafe { _mm512_cmp_pd_mask::<_CMP_NLE_UQ>(x, _mm512_set1_pd(threshold)) }
    }
    #[inline(always)]
    unsafe fn select(mask: __mmask8, if_clear: __m512d, if_set: __m512d) -> __m512d {
        unsafe { _mm512_mask_blend_pd(mask, if_clear, if_set) }
    }
    #[inline(always)]
    unsafe fn and(a: __mmask8, b: __mmask8) -> __mmask8 {
        a & b
    }
    #[inline(always)]
    unsafe fn and_not(a: __mmask8, b: __mmask8) -> __mmask8 {
        !a & b
    }
}

pub(super) struct Avx2;

impl Lanes for Avx2 {
    const LANES: usize = 4;
    type Values = __m256d;
    /// All ones in a lane where set (a comparison's result).
    type Mask = __m256d;
    #[inline(always)]
    unsafe fn all() -> __m256d {
        unsafe { _mm256_castsi256_pd(_mm256_set1_epi64x(-1)) }
    }
    #[inline(always)]
    unsafe fn splat(value: f64) -> __m256d {
        unsafe { _mm256_set1_pd(value) }
    }
    #[inline(always)]
    unsafe fn load(from: *const f64) -> __m256d {
        unsafe { _mm256_loadu_pd(from) }
    }
    #[inline(always)]
    unsafe fn store(to: *mut f64, values: __m256d) {
        unsafe { _mm256_storeu_pd(to, values) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
        unsafe { _mm256_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn right(x: __m256d, threshold: f64) -> __m256d {
        unsafe { _mm256_cmp_pd::<_CMP_NLE_UQ>(x, _mm256_set1_pd(threshold)) }
    }
    #[inline(always)]
    unsafe fn select(mask: __m256d, if_clear: __m256d, if_set: __m256d) -> __m256d {
        unsafe { _mm256_blendv_pd(if_clear, if_set, mask) }
    }
    #[inline(always)]
    unsafe fn and(a: __m256d, b: __m256d) -> __m256d {
        unsafe { _mm256_and_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn and_not(a: __m256d, b: __m256d) -> __m256d {
        unsafe { _mm256_andnot_pd(a, b) }
    }
}
