// SIMD vectors of 16 floats and the exponential the fused kernels share.
//
// GCC vector extensions (one AVX-512 register; two AVX2 registers
// elsewhere), compiled for the host CPU (-march=native), unaligned access
// allowed.
#ifndef TFP_FLOWPP_KERNELS_SIMD_MATH_H_
#define TFP_FLOWPP_KERNELS_SIMD_MATH_H_

#include <cstdint>

namespace tensorflow {
namespace flowpp {

typedef float V16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t I16 __attribute__((vector_size(64), aligned(4), may_alias));

// e^x as p · 2ᵏ and p − 1 (for expm1 where k = 0): Cody-Waite reduction
// x = k ln 2 + r, |r| ≤ ln2/2, and a degree-6 minimax polynomial for
// e^r (relative error < 1e-7, about one float32 ulp). x is clamped to
// [-87, 88]: e^-87 ≈ 1.6e-38 (not 0), e^88 ≈ 1.65e38 (not inf); NaN
// stays NaN (`Exp`, `Expm1`).
struct ExpParts {
  V16 pm1;  // p − 1 = e^r − 1, without the cancellation of forming p first
  I16 k;    // the power of two
};

inline ExpParts ExpReduce(V16 x) {
  const float kMagic = 12582912.f;  // 1.5·2²³: adding it rounds to integer.
  const V16 lowest = V16{} - 87.f, highest = V16{} + 88.f;
  const V16 magic = V16{} + kMagic;
  x = x < lowest ? lowest : x;
  x = x > highest ? highest : x;
  const V16 big = x * 1.44269504088896341f + kMagic;  // k = round(x / ln 2)
  const V16 k = big - magic;
  V16 r = x - k * 0.693359375f;  // ln 2 = 0.693359375 - 2.12194440e-4
  r = r + k * 2.12194440e-4f;
  V16 p = r * 0.0013836834114044905f + 0.008374815806746483f;
  p = p * r + 0.04166822507977486f;
  p = p * r + 0.16666419804096222f;
  p = p * r + 0.49999991059303284f;
  p = p * r + 1.f;
  return {p * r, (I16)big - (I16)magic};
}

// p · 2ᵏ for p ≥ 0 by adding k to the exponent bits.
inline V16 Scale2(V16 p, I16 k) { return (V16)((I16)p + (k << 23)); }

// e^x (lanes as ExpReduce).
inline V16 Exp(V16 x) {
  const ExpParts e = ExpReduce(x);
  const V16 value = Scale2(e.pm1 + 1.f, e.k);
  return x != x ? x : value;
}

// e^x − 1, accurate to about one ulp of e^x near 0 as well as for large
// |x| (where it is e^x − 1 computed in float32).
inline V16 Expm1(V16 x) {
  const ExpParts e = ExpReduce(x);
  const V16 scaled = Scale2(e.pm1 + 1.f, e.k) - 1.f;
  const V16 value = e.k == 0 ? e.pm1 : scaled;
  return x != x ? x : value;
}

}  // namespace flowpp
}  // namespace tensorflow

#endif  // TFP_FLOWPP_KERNELS_SIMD_MATH_H_
