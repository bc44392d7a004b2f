// Fused multi-head self-attention for CPUs, and its gradient.
//
//   qkv: [B, N, 3, H, d] (the attention block's 1×1 projection, flattened
//        to [B, N, 3·H·d]);   output[b, n, h] = Σ_m P[n, m] v[b, m, h],
//   P = softmax_m(q[b, n, h] · k[b, m, h] / √d),   → [B, N, H·d],
//
// one (image, head) at a time, a block of query rows at a time: the block's
// [rows, N] logits live in the L2 cache and never reach memory. float32 and
// float16 inputs are computed in float32, float64 in float64: the products
// are register-blocked SIMD loops (GCC vector extensions, compiled for the
// host CPU). bfloat16 inputs on CPUs with AVX512-BF16 use its dot products
// (HeadBf16), else the float32 path.
//
// The gradient recomputes P from the saved per-row log-normaliser and
// takes rowsum(dP ⊙ P) (= rowsum(dO ⊙ O)) from the same block, so it needs
// neither P nor the output.
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "simd_math.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("FlowppSelfAttention")
    .Input("qkv: T")
    .Output("output: T")
    .Output("log_normalizer: A")
    .Attr("heads: int >= 1")
    .Attr("T: {float, bfloat16, half, double}")
    .Attr("A: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      int heads;
      TF_RETURN_IF_ERROR(c->GetAttr("heads", &heads));
      DimensionHandle features;
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(x, 2), 3 * heads, true, &features));
      TF_RETURN_IF_ERROR(c->Multiply(features, heads, &features));
      c->set_output(0, c->MakeShape({c->Dim(x, 0), c->Dim(x, 1), features}));
      c->set_output(1, c->MakeShape({c->Dim(x, 0), heads, c->Dim(x, 1)}));
      return absl::OkStatus();
    });

REGISTER_OP("FlowppSelfAttentionGrad")
    .Input("qkv: T")
    .Input("log_normalizer: A")
    .Input("grad_output: T")
    .Output("grad_qkv: T")
    .Attr("heads: int >= 1")
    .Attr("T: {float, bfloat16, half, double}")
    .Attr("A: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

// SIMD vectors of 64 bytes (one AVX-512 register; two AVX2 registers
// elsewhere), unaligned access allowed.
template <typename A>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(64), aligned(8), may_alias));
};
template <typename A>
constexpr int64_t kLanes = 64 / sizeof(A);

// row[j] = exp(row[j] - shift) for j < n (n a multiple of the lanes);
// returns the sum. float: `flowpp::Exp` (simd_math.h: relative error < 1e-7,
// i.e. about one float32 ulp; arguments below -87 give e^-87 ≈ 1.6e-38,
// not 0), about twice as fast as Eigen's exp; float64: Eigen's exp.
template <typename A>
A ExpShifted(A* row, int64_t n, A shift) {
  Eigen::Map<Eigen::Array<A, Eigen::Dynamic, 1>> x(row, n);
  x = (x - shift).exp();
  return x.sum();
}

template <>
float ExpShifted<float>(float* row, int64_t n, float shift) {
  using flowpp::V16;
  V16 total = {};
  for (int64_t j = 0; j < n; j += 16) {
    const V16 e = flowpp::Exp(*reinterpret_cast<const V16*>(row + j) - shift);
    *reinterpret_cast<V16*>(row + j) = e;
    total += e;
  }
  float sum = 0;
  for (int i = 0; i < 16; ++i) sum += total[i];
  return sum;
}

int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The multiply-accumulate of the products below: float32 / float64 SIMD
// vectors times a broadcast scalar. (`PairMadd` is the bfloat16 one.)
template <typename A>
struct Madd {
  using In = A;   // Elements of the operands a and b.
  using Out = A;  // Elements of out.
  using Acc = typename Simd<A>::V;
  using B = Acc;
  static constexpr int64_t kLanes = kLanes<A>;  // Elements of b (and out)
                                                // per vector.
  static Acc Zero() { return Acc{}; }
  static Acc Load(const Out* p) { return *reinterpret_cast<const Acc*>(p); }
  static void Store(Out* p, Acc x) { *reinterpret_cast<Acc*>(p) = x; }
  static B LoadB(const In* p) { return *reinterpret_cast<const B*>(p); }
  static A Broadcast(const In* p) { return *p; }
  static Acc Apply(Acc acc, A x, B b) { return acc + x * b; }
};

// A kRows × kVecs register tile of out (+)= a · b: out[i, v] (+)=
// Σ_{c < inner} a[i, c] · b[c, v] (a: row stride lda; b, out: row strides
// ldb, ldo; v counts vectors).
template <bool kAccumulate, class Ops, int kRows, int kVecs>
inline void Tile(const typename Ops::In* a, int64_t lda,
                 const typename Ops::In* b, int64_t ldb, int64_t inner,
                 typename Ops::Out* o, int64_t ldo) {
  constexpr int64_t L = Ops::kLanes;
  typename Ops::Acc acc[kRows][kVecs];
  for (int i = 0; i < kRows; ++i) {
    for (int v = 0; v < kVecs; ++v) {
      acc[i][v] = kAccumulate ? Ops::Load(o + i * ldo + v * L) : Ops::Zero();
    }
  }
  for (int64_t c = 0; c < inner; ++c) {
    typename Ops::B bv[kVecs];
    for (int v = 0; v < kVecs; ++v) bv[v] = Ops::LoadB(b + c * ldb + v * L);
    for (int i = 0; i < kRows; ++i) {
      const auto x = Ops::Broadcast(a + i * lda + c);
      for (int v = 0; v < kVecs; ++v) {
        acc[i][v] = Ops::Apply(acc[i][v], x, bv[v]);
      }
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int v = 0; v < kVecs; ++v) Ops::Store(o + i * ldo + v * L, acc[i][v]);
  }
}

// out[r, :np] (+)= Σ_{c < inner} a[r, c] · b[c, :np]  for r < rows (a:
// row stride lda, b: [inner, np], out: [rows, np]; np a multiple of the
// lanes). Scalar a times vector rows of b: full SIMD width whatever the
// head dimension; 4 × 3 tiles keep 12 independent accumulators in flight.
template <bool kAccumulate, class Ops>
void RowsTimesColumns(const typename Ops::In* a, int64_t lda, int64_t rows,
                      const typename Ops::In* b, int64_t inner, int64_t np,
                      typename Ops::Out* out) {
  constexpr int64_t L = Ops::kLanes;
  // Column strips outside, rows inside: a strip of b ([inner, 3 vectors])
  // stays in L1 while every row of a passes over it.
  auto strip = [&](auto vectors, int64_t j) {
    constexpr int kVecs = decltype(vectors)::value;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      Tile<kAccumulate, Ops, 4, kVecs>(a + r * lda, lda, b + j, np, inner,
                                       out + r * np + j, np);
    }
    for (; r < rows; ++r) {
      Tile<kAccumulate, Ops, 1, kVecs>(a + r * lda, lda, b + j, np, inner,
                                       out + r * np + j, np);
    }
  };
  int64_t j = 0;
  for (; j + 3 * L <= np; j += 3 * L) {
    strip(std::integral_constant<int, 3>(), j);
  }
  for (; j < np; j += L) strip(std::integral_constant<int, 1>(), j);
}

// Rows per register tile of WeightsTimesRows, by vectors per row: 12-18
// accumulators in flight (measured on Zen 5: 4 rows of 2 vectors ran at 79
// GFLOP/s a core, 8 rows at 200).
constexpr int kMixRows[] = {0, 8, 8, 6, 4};

// out[r, :] = Σ_{j < n} w[r, j] · x[j, :]  for r < rows (w: [rows, ldw],
// x: [n, VECS vectors], out: [rows, VECS vectors]): the whole width of x in
// registers, kMixRows[VECS] rows at a time.
template <class Ops, int VECS>
void WeightsTimesRows(const typename Ops::In* w, int64_t ldw, int64_t rows,
                      int64_t n, const typename Ops::In* x,
                      typename Ops::Out* out) {
  constexpr int kRows = kMixRows[VECS];
  constexpr int64_t dp = VECS * Ops::kLanes;
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) {
    Tile<false, Ops, kRows, VECS>(w + r * ldw, ldw, x, dp, n, out + r * dp,
                                  dp);
  }
  for (; r + 2 <= rows; r += 2) {
    Tile<false, Ops, 2, VECS>(w + r * ldw, ldw, x, dp, n, out + r * dp, dp);
  }
  for (; r < rows; ++r) {
    Tile<false, Ops, 1, VECS>(w + r * ldw, ldw, x, dp, n, out + r * dp, dp);
  }
}

struct Geometry {
  int64_t batch, steps, features, heads, dim;
  // Offset of (b, n, part, h, 0) in qkv [B, N, 3, H, d].
  int64_t Qkv(int64_t b, int64_t n, int part, int64_t h) const {
    return ((b * steps + n) * 3 + part) * features + h * dim;
  }
  // Offset of (b, n, h, 0) in the output [B, N, H, d].
  int64_t Out(int64_t b, int64_t n, int64_t h) const {
    return (b * steps + n) * features + h * dim;
  }
};

// The geometry of qkv for `heads` heads; an error for a bad shape or a head
// wider than the kernel's products take (max_dim).
absl::Status MakeGeometry(const Tensor& qkv, int heads, int64_t max_dim,
                          Geometry* g) {
  if (qkv.dims() != 3) {
    return errors::InvalidArgument(
        "qkv must be [batch, positions, 3 * heads * head_dim], got shape ",
        qkv.shape().DebugString());
  }
  g->batch = qkv.dim_size(0);
  g->steps = qkv.dim_size(1);
  const int64_t channels = qkv.dim_size(2);
  if (channels % (3 * heads) != 0) {
    return errors::InvalidArgument("qkv has ", channels,
                                   " channels, not 3 * heads * head_dim for ",
                                   heads, " heads");
  }
  g->features = channels / 3;
  g->heads = heads;
  g->dim = g->features / heads;
  if (g->dim > max_dim) {
    return errors::InvalidArgument("head dimension ", g->dim,
                                   " exceeds the fused kernel's ", max_dim);
  }
  return absl::OkStatus();
}

// Bytes of one block of logits (see Head::block).
constexpr int64_t kBlockBytes = int64_t{128} << 10;

// One (image, head) at a time: padded copies of its q, k, v in the
// accumulation type, and the blocked products.
template <typename A>
struct Head {
  using Ops = Madd<A>;
  using V = typename Simd<A>::V;
  static constexpr int64_t L = kLanes<A>;
  const Geometry& g;
  const int64_t dp, np, block;
  // q, k, v, dout: [N, dp]; kt, vt, dkt, dvt: [d, np]; s, dp_block:
  // [block, np]; o, dq: [block, dp]; qt_block, dot_block: [d, block].
  std::vector<A> q, k, kt, v, vt, s, o, inverse, dout, dp_block, dq, dkt, dvt,
      qt_block, dot_block;

  Head(const Geometry& geometry, bool gradient)
      : g(geometry),
        dp(RoundUp(geometry.dim, L)),
        np(RoundUp(geometry.steps, L)),
        // Query rows per block: a multiple of 8 rows, with the [rows, N]
        // logits (and their gradient) in kBlockBytes, so they stay in the
        // L2 cache.
        block(std::min<int64_t>(
            std::max<int64_t>(8, kBlockBytes / (np * sizeof(A) *
                                                (gradient ? 2 : 1)) / 8 * 8),
            std::max<int64_t>(geometry.steps, 1))) {
    q.assign(g.steps * dp, A(0));
    kt.assign(g.dim * np, A(0));
    v.assign(g.steps * dp, A(0));
    s.assign(block * np, A(0));
    if (gradient) {
      k.assign(g.steps * dp, A(0));
      vt.assign(g.dim * np, A(0));
      dout.assign(g.steps * dp, A(0));
      dp_block.assign(block * np, A(0));
      dq.assign(block * dp, A(0));
      dkt.assign(g.dim * np, A(0));
      dvt.assign(g.dim * np, A(0));
      qt_block.assign(g.dim * block, A(0));
      dot_block.assign(g.dim * block, A(0));
    } else {
      o.assign(block * dp, A(0));
      inverse.assign(block, A(0));
    }
  }

  template <typename T>
  void Load(const T* qkv, int64_t b, int64_t h, A scale) {
    for (int64_t n = 0; n < g.steps; ++n) {
      const T* qr = qkv + g.Qkv(b, n, 0, h);
      const T* kr = qkv + g.Qkv(b, n, 1, h);
      const T* vr = qkv + g.Qkv(b, n, 2, h);
      for (int64_t c = 0; c < g.dim; ++c) {
        q[n * dp + c] = static_cast<A>(qr[c]) * scale;
        kt[c * np + n] = static_cast<A>(kr[c]);
        v[n * dp + c] = static_cast<A>(vr[c]);
      }
      if (!k.empty()) {
        for (int64_t c = 0; c < g.dim; ++c) {
          k[n * dp + c] = kt[c * np + n];
          vt[c * np + n] = v[n * dp + c];
        }
      }
    }
  }

  // w[r, :] · x for r < rows, x one of the [N, dp] matrices.
  void Mix(const A* w, int64_t rows, const A* x, A* out) const {
    switch (dp / L) {
      case 1: return WeightsTimesRows<Ops, 1>(w, np, rows, g.steps, x, out);
      case 2: return WeightsTimesRows<Ops, 2>(w, np, rows, g.steps, x, out);
      case 3: return WeightsTimesRows<Ops, 3>(w, np, rows, g.steps, x, out);
      default: return WeightsTimesRows<Ops, 4>(w, np, rows, g.steps, x, out);
    }
  }

  // exp(row - shift) over the N positions (the padding becomes 0); returns
  // the sum.
  A ExpRow(A* row, A shift) const {
    std::fill(row + g.steps, row + np, shift);  // exp(0) = 1 on the padding,
    const A total = ExpShifted(row, np, shift) - A(np - g.steps);
    std::fill(row + g.steps, row + np, A(0));  // then 0.
    return total;
  }

  // max(row[:N]), vectorised (the padding is set to -inf first).
  A RowMax(A* row) const {
    std::fill(row + g.steps, row + np, -std::numeric_limits<A>::infinity());
    V m = *reinterpret_cast<const V*>(row);
    for (int64_t j = L; j < np; j += L) {
      const V x = *reinterpret_cast<const V*>(row + j);
      m = m > x ? m : x;
    }
    A out = m[0];
    for (int64_t i = 1; i < L; ++i) out = std::max(out, m[i]);
    return out;
  }

  // (q is scaled in Load.)
  template <typename T>
  void Forward(int64_t b, int64_t h, A /*scale*/, T* out, A* lse) {
    for (int64_t i0 = 0; i0 < g.steps; i0 += block) {
      const int64_t rows = std::min(block, g.steps - i0);
      RowsTimesColumns<false, Ops>(q.data() + i0 * dp, dp, rows, kt.data(),
                                   g.dim, np, s.data());
      // Unnormalised: o = (Σ_m exp(s - max) v) / Σ_m exp(s - max).
      for (int64_t r = 0; r < rows; ++r) {
        A* row = s.data() + r * np;
        const A m = RowMax(row);
        const A total = ExpRow(row, m);
        lse[i0 + r] = m + std::log(total);
        inverse[r] = A(1) / total;
      }
      Mix(s.data(), rows, v.data(), o.data());
      for (int64_t r = 0; r < rows; ++r) {
        T* dst = out + g.Out(b, i0 + r, h);
        for (int64_t c = 0; c < g.dim; ++c) {
          dst[c] = static_cast<T>(o[r * dp + c] * inverse[r]);
        }
      }
    }
  }

  template <typename T>
  void Backward(const T* grad_output, const A* lse, int64_t b, int64_t h,
                A scale, T* grad_qkv) {
    for (int64_t n = 0; n < g.steps; ++n) {
      const T* row = grad_output + g.Out(b, n, h);
      for (int64_t c = 0; c < g.dim; ++c) {
        dout[n * dp + c] = static_cast<A>(row[c]);
      }
    }
    std::fill(dkt.begin(), dkt.end(), A(0));
    std::fill(dvt.begin(), dvt.end(), A(0));
    for (int64_t i0 = 0; i0 < g.steps; i0 += block) {
      const int64_t rows = std::min(block, g.steps - i0);
      // P (recomputed) and dP = dO vᵀ for the block.
      RowsTimesColumns<false, Ops>(q.data() + i0 * dp, dp, rows, kt.data(),
                                   g.dim, np, s.data());
      RowsTimesColumns<false, Ops>(dout.data() + i0 * dp, dp, rows, vt.data(),
                                   g.dim, np, dp_block.data());
      for (int64_t r = 0; r < rows; ++r) {
        A* p = s.data() + r * np;
        A* dpr = dp_block.data() + r * np;
        ExpRow(p, lse[i0 + r]);  // P, normalised; 0 on the padding.
        Eigen::Map<Eigen::Array<A, Eigen::Dynamic, 1>> pa(p, np), da(dpr, np);
        const A mean = (pa * da).sum();  // rowsum(P ⊙ dP), exact here.
        da = pa * (da - mean);
      }
      // dS = dp_block: dq = dS k, dkᵀ += qᵀ dS, dvᵀ += dOᵀ P.
      Mix(dp_block.data(), rows, k.data(), dq.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < g.dim; ++c) {
          qt_block[c * rows + r] = q[(i0 + r) * dp + c];
          dot_block[c * rows + r] = dout[(i0 + r) * dp + c];
        }
      }
      RowsTimesColumns<true, Ops>(qt_block.data(), rows, g.dim,
                                  dp_block.data(), rows, np, dkt.data());
      RowsTimesColumns<true, Ops>(dot_block.data(), rows, g.dim, s.data(),
                                  rows, np, dvt.data());
      for (int64_t r = 0; r < rows; ++r) {
        T* dst = grad_qkv + g.Qkv(b, i0 + r, 0, h);
        for (int64_t c = 0; c < g.dim; ++c) {
          dst[c] = static_cast<T>(dq[r * dp + c] * scale);
        }
      }
    }
    for (int64_t n = 0; n < g.steps; ++n) {
      T* dst_k = grad_qkv + g.Qkv(b, n, 1, h);
      T* dst_v = grad_qkv + g.Qkv(b, n, 2, h);
      for (int64_t c = 0; c < g.dim; ++c) {
        dst_k[c] = static_cast<T>(dkt[c * np + n]);
        dst_v[c] = static_cast<T>(dvt[c * np + n]);
      }
    }
  }
};

#ifdef __AVX512BF16__
// bfloat16 inputs on CPUs with AVX512-BF16 (Zen 4/5, Xeons since Cooper
// Lake): the products take bfloat16 operands in pairs (vdpbf16ps: 32
// products into 16 float32 sums per instruction, twice the float32 rate),
// accumulate in float32; the softmax, its log-normaliser and dS are
// float32 and rounded to bfloat16 only as operands of the next product,
// as TensorFlow's bfloat16 path rounds them. The 1/√d scale is applied to
// the float32 logits, not to q, so q and k enter the products unrounded.
typedef uint32_t Pair;  // Two bfloat16 values, the first in the low half.

inline __m512bh BroadcastPair(const Pair* p) {
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(*p));
}
inline __m512bh LoadPairs(const Pair* p) {
  return (__m512bh)_mm512_loadu_si512(p);
}
// 16 floats → 16 bfloat16 (round to nearest even), as 16-bit integers.
inline __m256i Convert16(const float* x) {
  return (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x));
}

// bfloat16 pairs times a broadcast pair into float32 sums (vdpbf16ps).
struct PairMadd {
  using In = Pair;
  using Out = float;
  using Acc = __m512;
  using B = __m512bh;
  static constexpr int64_t kLanes = 16;
  static Acc Zero() { return _mm512_setzero_ps(); }
  static Acc Load(const Out* p) { return _mm512_loadu_ps(p); }
  static void Store(Out* p, Acc x) { _mm512_storeu_ps(p, x); }
  static B LoadB(const In* p) { return LoadPairs(p); }
  static B Broadcast(const In* p) { return BroadcastPair(p); }
  static Acc Apply(Acc acc, B x, B b) { return _mm512_dpbf16_ps(acc, x, b); }
};

// Rows r and r + 1 of a float32 [rows, np] block as pairs [np] (a missing
// row r + 1 is 0).
inline void InterleaveRows(const float* x, int64_t np, int64_t r,
                           int64_t rows, Pair* out) {
  const float* a = x + r * np;
  for (int64_t j = 0; j < np; j += 16) {
    const __m512i lo = _mm512_cvtepu16_epi32(Convert16(a + j));
    const __m512i hi =
        r + 1 < rows
            ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(Convert16(a + np + j)),
                                16)
            : _mm512_setzero_si512();
    _mm512_storeu_si512(out + j, _mm512_or_si512(lo, hi));
  }
}

// One (image, head) of bfloat16 qkv, in the layouts the pair products read.
struct HeadBf16 {
  const Geometry& g;
  // d in pairs (d padded to even), dp (d padded to 16), N padded to 32 (an
  // even number of 16-lane vectors of positions), block rows.
  const int64_t dpairs, dp, np, block;
  // q_rows, dout_rows: [N, dpairs] pairs along d; k_cols, v_cols: [dpairs,
  // np] (k[j, 2c], k[j, 2c+1]) per position j; k_pos, v_pos: [np/2, dp]
  // (x[2m, c], x[2m+1, c]) per channel c.
  std::vector<Pair> q_rows, k_cols, v_pos, k_pos, v_cols, dout_rows;
  std::vector<float> s, o, inverse, dp_block, dq, dkt, dvt;
  // Pairs of the current block: rows of P / dS along positions, and
  // (row 2i, row 2i+1) per position; qᵀ, dOᵀ along rows.
  std::vector<Pair> p_rows, p_pos, ds_rows, ds_pos, qt_rows, dot_rows;

  HeadBf16(const Geometry& geometry, bool gradient)
      : g(geometry),
        dpairs((geometry.dim + 1) / 2),
        dp(RoundUp(geometry.dim, 16)),
        np(RoundUp(geometry.steps, 32)),
        block(std::min<int64_t>(
            std::max<int64_t>(8, kBlockBytes / (np * 4 * (gradient ? 2 : 1)) /
                                     8 * 8),
            RoundUp(std::max<int64_t>(geometry.steps, 1), 2))) {
    q_rows.assign(g.steps * dpairs, 0);
    k_cols.assign(dpairs * np, 0);
    v_pos.assign(np / 2 * dp, 0);
    s.assign(block * np, 0.f);
    p_rows.assign(block * np / 2, 0);
    if (gradient) {
      k_pos.assign(np / 2 * dp, 0);
      v_cols.assign(dpairs * np, 0);
      dout_rows.assign(g.steps * dpairs, 0);
      dp_block.assign(block * np, 0.f);
      dq.assign(block * dp, 0.f);
      dkt.assign(dpairs * 2 * np, 0.f);
      dvt.assign(dpairs * 2 * np, 0.f);
      p_pos.assign(block / 2 * np, 0);
      ds_rows.assign(block * np / 2, 0);
      ds_pos.assign(block / 2 * np, 0);
      qt_rows.assign(2 * dpairs * block / 2, 0);
      dot_rows.assign(2 * dpairs * block / 2, 0);
    } else {
      o.assign(block * dp, 0.f);
      inverse.assign(block, 0.f);
    }
  }

  static uint16_t Bits(const bfloat16& x) { return x.value; }

  // (The scale is applied to the logits.)
  void Load(const bfloat16* qkv, int64_t b, int64_t h, float /*scale*/) {
    const bool gradient = !k_pos.empty();
    for (int64_t n = 0; n < g.steps; ++n) {
      const bfloat16* qr = qkv + g.Qkv(b, n, 0, h);
      const bfloat16* kr = qkv + g.Qkv(b, n, 1, h);
      const bfloat16* vr = qkv + g.Qkv(b, n, 2, h);
      uint16_t* v_half = reinterpret_cast<uint16_t*>(v_pos.data()) +
                         (n / 2) * dp * 2 + (n % 2);
      uint16_t* k_half = reinterpret_cast<uint16_t*>(k_pos.data()) +
                         (n / 2) * dp * 2 + (n % 2);
      for (int64_t c = 0; c < g.dim; ++c) {
        const int64_t pair = (c / 2) * np + n;
        reinterpret_cast<uint16_t*>(q_rows.data())[n * dpairs * 2 + c] =
            Bits(qr[c]);
        reinterpret_cast<uint16_t*>(k_cols.data())[pair * 2 + c % 2] =
            Bits(kr[c]);
        v_half[2 * c] = Bits(vr[c]);
        if (gradient) {
          k_half[2 * c] = Bits(kr[c]);
          reinterpret_cast<uint16_t*>(v_cols.data())[pair * 2 + c % 2] =
              Bits(vr[c]);
        }
      }
    }
  }

  void Mix(const Pair* w, int64_t rows, const Pair* x, float* out) const {
    switch (dp / 16) {
      case 1:
        return WeightsTimesRows<PairMadd, 1>(w, np / 2, rows, np / 2, x, out);
      case 2:
        return WeightsTimesRows<PairMadd, 2>(w, np / 2, rows, np / 2, x, out);
      case 3:
        return WeightsTimesRows<PairMadd, 3>(w, np / 2, rows, np / 2, x, out);
      default:
        return WeightsTimesRows<PairMadd, 4>(w, np / 2, rows, np / 2, x, out);
    }
  }

  // Row r of a float32 block as pairs along positions.
  void RowPairs(const float* x, int64_t r, Pair* out) const {
    uint16_t* dst = reinterpret_cast<uint16_t*>(out + r * np / 2);
    for (int64_t j = 0; j < np; j += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j),
                          Convert16(x + r * np + j));
    }
  }

  // Logits of a block: scale · q kᵀ, padding -inf; returns nothing.
  void Logits(int64_t i0, int64_t rows, float scale) {
    RowsTimesColumns<false, PairMadd>(q_rows.data() + i0 * dpairs, dpairs,
                                      rows, k_cols.data(), dpairs, np,
                                      s.data());
    for (int64_t r = 0; r < rows; ++r) {
      float* row = s.data() + r * np;
      for (int64_t j = 0; j < np; j += 16) {
        _mm512_storeu_ps(row + j,
                         _mm512_mul_ps(_mm512_loadu_ps(row + j),
                                       _mm512_set1_ps(scale)));
      }
    }
  }

  float RowMax(const float* row) const {
    __m512 m = _mm512_loadu_ps(row);
    for (int64_t j = 16; j < np; j += 16) {
      m = _mm512_max_ps(m, _mm512_loadu_ps(row + j));
    }
    float out = _mm512_reduce_max_ps(m);
    return out;
  }

  // exp(row - shift), 0 on the padding; returns the sum.
  float ExpRow(float* row, float shift) const {
    std::fill(row + g.steps, row + np, shift);
    const float total = ExpShifted(row, np, shift) - float(np - g.steps);
    std::fill(row + g.steps, row + np, 0.f);
    return total;
  }

  void Forward(int64_t b, int64_t h, float scale, bfloat16* out, float* lse) {
    for (int64_t i0 = 0; i0 < g.steps; i0 += block) {
      const int64_t rows = std::min(block, g.steps - i0);
      Logits(i0, rows, scale);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = s.data() + r * np;
        std::fill(row + g.steps, row + np,
                  -std::numeric_limits<float>::infinity());
        const float m = RowMax(row);
        const float total = ExpRow(row, m);
        lse[i0 + r] = m + std::log(total);
        inverse[r] = 1.f / total;
        RowPairs(s.data(), r, p_rows.data());
      }
      Mix(p_rows.data(), rows, v_pos.data(), o.data());
      for (int64_t r = 0; r < rows; ++r) {
        bfloat16* dst = out + g.Out(b, i0 + r, h);
        for (int64_t c = 0; c < g.dim; ++c) {
          dst[c] = bfloat16(o[r * dp + c] * inverse[r]);
        }
      }
    }
  }

  void Backward(const bfloat16* grad_output, const float* lse, int64_t b,
                int64_t h, float scale, bfloat16* grad_qkv) {
    for (int64_t n = 0; n < g.steps; ++n) {
      const bfloat16* row = grad_output + g.Out(b, n, h);
      uint16_t* dst =
          reinterpret_cast<uint16_t*>(dout_rows.data()) + n * dpairs * 2;
      for (int64_t c = 0; c < g.dim; ++c) dst[c] = Bits(row[c]);
    }
    std::fill(dkt.begin(), dkt.end(), 0.f);
    std::fill(dvt.begin(), dvt.end(), 0.f);
    for (int64_t i0 = 0; i0 < g.steps; i0 += block) {
      const int64_t rows = std::min(block, g.steps - i0);
      const int64_t row_pairs = (rows + 1) / 2;
      Logits(i0, rows, scale);
      RowsTimesColumns<false, PairMadd>(dout_rows.data() + i0 * dpairs,
                                        dpairs, rows, v_cols.data(), dpairs,
                                        np, dp_block.data());
      for (int64_t r = 0; r < rows; ++r) {
        float* p = s.data() + r * np;
        float* dpr = dp_block.data() + r * np;
        ExpRow(p, lse[i0 + r]);  // P, normalised; 0 on the padding.
        Eigen::Map<Eigen::ArrayXf> pa(p, np), da(dpr, np);
        const float mean = (pa * da).sum();  // rowsum(P ⊙ dP), exact here.
        da = pa * (da - mean);
        RowPairs(dp_block.data(), r, ds_rows.data());
      }
      for (int64_t rp = 0; rp < row_pairs; ++rp) {
        InterleaveRows(s.data(), np, 2 * rp, rows, p_pos.data() + rp * np);
        InterleaveRows(dp_block.data(), np, 2 * rp, rows,
                       ds_pos.data() + rp * np);
      }
      // qᵀ and dOᵀ of the block as pairs along rows (0 past the last row).
      const uint16_t* q16 = reinterpret_cast<const uint16_t*>(q_rows.data());
      const uint16_t* d16 =
          reinterpret_cast<const uint16_t*>(dout_rows.data());
      uint16_t* qt16 = reinterpret_cast<uint16_t*>(qt_rows.data());
      uint16_t* dt16 = reinterpret_cast<uint16_t*>(dot_rows.data());
      for (int64_t c = 0; c < 2 * dpairs; ++c) {
        for (int64_t r = 0; r < 2 * row_pairs; ++r) {
          const bool in = r < rows;
          const int64_t at = (i0 + r) * dpairs * 2 + c;
          qt16[c * row_pairs * 2 + r] = in ? q16[at] : 0;
          dt16[c * row_pairs * 2 + r] = in ? d16[at] : 0;
        }
      }
      // dq = scale · dS k; dkᵀ += scale · qᵀ dS; dvᵀ += dOᵀ P.
      Mix(ds_rows.data(), rows, k_pos.data(), dq.data());
      RowsTimesColumns<true, PairMadd>(qt_rows.data(), row_pairs, 2 * dpairs,
                                       ds_pos.data(), row_pairs, np,
                                       dkt.data());
      RowsTimesColumns<true, PairMadd>(dot_rows.data(), row_pairs, 2 * dpairs,
                                       p_pos.data(), row_pairs, np,
                                       dvt.data());
      for (int64_t r = 0; r < rows; ++r) {
        bfloat16* dst = grad_qkv + g.Qkv(b, i0 + r, 0, h);
        for (int64_t c = 0; c < g.dim; ++c) {
          dst[c] = bfloat16(dq[r * dp + c] * scale);
        }
      }
    }
    for (int64_t n = 0; n < g.steps; ++n) {
      bfloat16* dst_k = grad_qkv + g.Qkv(b, n, 1, h);
      bfloat16* dst_v = grad_qkv + g.Qkv(b, n, 2, h);
      for (int64_t c = 0; c < g.dim; ++c) {
        dst_k[c] = bfloat16(dkt[c * np + n] * scale);
        dst_v[c] = bfloat16(dvt[c * np + n]);
      }
    }
  }
};
#endif  // __AVX512BF16__

// Heads of up to this many values run the SIMD loops (4 vectors).
template <typename A>
constexpr int64_t kMaxDim = 4 * kLanes<A>;

// Runs fn(head, b, h, task) for every (image b, head h) = task, sharded
// over TensorFlow's CPU threads, each shard with one workspace: HeadBf16
// for bfloat16 on CPUs with AVX512-BF16, else Head<A>. Each task is
// computed by one thread in a fixed order, so the result does not depend
// on the thread count or the sharding.
template <typename T, typename A, typename Fn>
void ForEachHead(OpKernelContext* context, const Geometry& g, bool gradient,
                 int64_t cost_per_task, Fn fn) {
  auto work = [&](int64_t begin, int64_t end) {
    auto run = [&](auto& head) {
      for (int64_t task = begin; task < end; ++task) {
        fn(head, task / g.heads, task % g.heads, task);
      }
    };
#ifdef __AVX512BF16__
    if constexpr (std::is_same<T, bfloat16>::value) {
      HeadBf16 head(g, gradient);
      run(head);
      return;
    }
#endif
    Head<A> head(g, gradient);
    run(head);
  };
  const auto& threads = *context->device()->tensorflow_cpu_worker_threads();
  Shard(threads.num_threads, threads.workers, g.batch * g.heads,
        cost_per_task, work);
}

template <typename T, typename A>
class SelfAttentionOp : public OpKernel {
 public:
  explicit SelfAttentionOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("heads", &heads_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& qkv = context->input(0);
    Geometry g;
    OP_REQUIRES_OK(context, MakeGeometry(qkv, heads_, kMaxDim<A>, &g));
    Tensor* output = nullptr;
    Tensor* log_normalizer = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({g.batch, g.steps, g.features}),
                                &output));
    OP_REQUIRES_OK(context, context->allocate_output(
                                1, TensorShape({g.batch, g.heads, g.steps}),
                                &log_normalizer));
    if (qkv.NumElements() == 0) return;
    const T* in = qkv.flat<T>().data();
    T* out = output->flat<T>().data();
    A* lse = log_normalizer->flat<A>().data();
    const A scale = A(1) / std::sqrt(static_cast<A>(g.dim));
    ForEachHead<T, A>(context, g, /*gradient=*/false,
                      4 * g.steps * g.steps * g.dim,
                      [&](auto& head, int64_t b, int64_t h, int64_t task) {
                        head.Load(in, b, h, scale);
                        head.Forward(b, h, scale, out, lse + task * g.steps);
                      });
  }

 private:
  int heads_;
};

template <typename T, typename A>
class SelfAttentionGradOp : public OpKernel {
 public:
  explicit SelfAttentionGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("heads", &heads_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& qkv = context->input(0);
    const Tensor& log_normalizer = context->input(1);
    const Tensor& grad_output = context->input(2);
    Geometry g;
    OP_REQUIRES_OK(context, MakeGeometry(qkv, heads_, kMaxDim<A>, &g));
    OP_REQUIRES(context,
                log_normalizer.shape() ==
                    TensorShape({g.batch, g.heads, g.steps}),
                errors::InvalidArgument("log_normalizer has shape ",
                                        log_normalizer.shape().DebugString()));
    OP_REQUIRES(context,
                grad_output.shape() ==
                    TensorShape({g.batch, g.steps, g.features}),
                errors::InvalidArgument("grad_output has shape ",
                                        grad_output.shape().DebugString()));
    Tensor* grad_qkv = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, qkv.shape(), &grad_qkv));
    if (qkv.NumElements() == 0) return;
    const T* in = qkv.flat<T>().data();
    const A* lse = log_normalizer.flat<A>().data();
    const T* dout = grad_output.flat<T>().data();
    T* dqkv = grad_qkv->flat<T>().data();
    const A scale = A(1) / std::sqrt(static_cast<A>(g.dim));
    ForEachHead<T, A>(context, g, /*gradient=*/true,
                      12 * g.steps * g.steps * g.dim,
                      [&](auto& head, int64_t b, int64_t h, int64_t task) {
                        head.Load(in, b, h, scale);
                        head.Backward(dout, lse + task * g.steps, b, h, scale,
                                      dqkv);
                      });
  }

 private:
  int heads_;
};

#define REGISTER(T, A)                                           \
  REGISTER_KERNEL_BUILDER(Name("FlowppSelfAttention")            \
                              .Device(DEVICE_CPU)                \
                              .TypeConstraint<T>("T")            \
                              .TypeConstraint<A>("A"),           \
                          SelfAttentionOp<T, A>);                \
  REGISTER_KERNEL_BUILDER(Name("FlowppSelfAttentionGrad")        \
                              .Device(DEVICE_CPU)                \
                              .TypeConstraint<T>("T")            \
                              .TypeConstraint<A>("A"),           \
                          SelfAttentionGradOp<T, A>);

REGISTER(float, float)
REGISTER(bfloat16, float)
REGISTER(Eigen::half, float)
REGISTER(double, double)

}  // namespace
}  // namespace tensorflow
