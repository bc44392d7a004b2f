// The elementwise work of the Flow++ gated residual blocks, fused, for CPUs.
//
//   FlowppConcatElu      x [..., C] → y [..., 2C]:  y = [elu(x), elu(−x)]
//   FlowppGatedResidual  x [..., C], h [..., 2C] → x + a · σ(b),  [a, b] = h
//
// and their gradients. TensorFlow runs each as 4–6 ops (casts around the
// float32 computation of 16-bit inputs, the negation, the concatenation or
// split, the ELU or sigmoid, the product, the residual add), each a pass
// over memory; these kernels read their inputs once and write their output
// once, computing in float32 registers (bfloat16 inputs are widened in
// registers and results rounded to nearest even, as tf.cast rounds).
//
// The gradients recompute e^{−|x|} and σ(b) from the forward inputs, so
// no intermediate is saved:
//   d concat_elu:  dx = x > 0 ? dy_a − dy_b e^{−x} : dy_a e^{x} − dy_b
//   d gated res.:  dh = [dy σ(b), dy a σ(b) σ(−b)]   (dx = dy)
#define EIGEN_USE_THREADS

#include <cstdint>
#include <algorithm>
#include <cstring>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "simd_math.h"

namespace tensorflow {
namespace {

using flowpp::V16;
using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// The last dimension of input `index` times `factor` (the other dimensions
// kept): FlowppConcatElu's output, FlowppGatedResidual's `h`.
absl::Status LastDimTimes(InferenceContext* c, int index, int factor,
                          ShapeHandle* out) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(index), 1, &x));
  DimensionHandle last;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, -1), factor, &last));
  return c->ReplaceDim(x, -1, last, out);
}

REGISTER_OP("FlowppConcatElu")
    .Input("x: T")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(LastDimTimes(c, 0, 2, &y));
      c->set_output(0, y);
      return absl::OkStatus();
    });

REGISTER_OP("FlowppConcatEluGrad")
    .Input("x: T")
    .Input("grad_y: T")
    .Output("grad_x: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("FlowppGatedResidual")
    .Input("x: T")
    .Input("h: T")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("FlowppGatedResidualGrad")
    .Input("h: T")
    .Input("grad_y: T")
    .Output("grad_h: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

typedef uint16_t H16 __attribute__((vector_size(32), aligned(2), may_alias));
typedef uint32_t U16 __attribute__((vector_size(64), aligned(4), may_alias));

// Up to 16 elements of T as float32 lanes (missing lanes 0), and back.
template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
  static V16 Load(const float* p, int64_t n) {
    if (n == 16) return *reinterpret_cast<const V16*>(p);
    V16 v = {};
    std::memcpy(&v, p, n * sizeof(float));
    return v;
  }
  static void Store(V16 v, float* p, int64_t n) {
    if (n == 16) {
      *reinterpret_cast<V16*>(p) = v;
      return;
    }
    std::memcpy(p, &v, n * sizeof(float));
  }
};

template <>
struct Lanes<bfloat16> {
  static V16 Load(const bfloat16* p, int64_t n) {
    H16 h = {};
    if (n == 16) {
      h = *reinterpret_cast<const H16*>(p);
    } else {
      std::memcpy(&h, p, n * sizeof(bfloat16));
    }
    return (V16)(__builtin_convertvector(h, U16) << 16);
  }
  // Round to nearest even (NaN stays a quiet NaN), as Eigen::bfloat16 does.
  static void Store(V16 v, bfloat16* p, int64_t n) {
    const U16 bits = (U16)v;
    U16 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    rounded = v != v ? U16{} + 0x7fc0u : rounded;
    const H16 h = __builtin_convertvector(rounded, H16);
    if (n == 16) {
      *reinterpret_cast<H16*>(p) = h;
    } else {
      std::memcpy(p, &h, n * sizeof(bfloat16));
    }
  }
};

// fn(row, column, lanes) over [rows, channels] in blocks of ≤ 16 channels,
// rows sharded over TensorFlow's CPU threads (elementwise, so the result
// does not depend on the sharding).
template <typename Fn>
void ForEachBlock(OpKernelContext* context, int64_t rows, int64_t channels,
                  int64_t cost_per_element, Fn fn) {
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t c = 0; c < channels; c += 16) {
        fn(r, c, std::min<int64_t>(16, channels - c));
      }
    }
  };
  const auto& threads = *context->device()->tensorflow_cpu_worker_threads();
  Shard(threads.num_threads, threads.workers, rows,
        cost_per_element * channels, work);
}

// σ(b) and σ'(b) = σ(b) σ(−b) from e = e^{−|b|} and q = 1 / (1 + e):
// σ(|b|) = q, σ(−|b|) = e q, so σ' = e q² without the cancellation of
// σ (1 − σ) where σ is near 1.
struct Sigmoids {
  V16 value, slope;
};

inline Sigmoids Sigmoid(V16 b) {
  const V16 e = flowpp::Exp(b > 0 ? -b : b);
  const V16 q = 1.f / (1.f + e);
  const V16 eq = e * q;
  return {b > 0 ? q : eq, eq * q};
}

absl::Status CheckPair(const Tensor& small, const Tensor& wide,
                       const char* small_name, const char* wide_name) {
  if (small.dims() < 1) {
    return errors::InvalidArgument(small_name, " must have a channel axis");
  }
  TensorShape want = small.shape();
  want.set_dim(want.dims() - 1, 2 * small.dim_size(small.dims() - 1));
  if (wide.shape() != want) {
    return errors::InvalidArgument(
        wide_name, " must have shape ", want.DebugString(), " (", small_name,
        " ", small.shape().DebugString(), " with twice the channels), got ",
        wide.shape().DebugString());
  }
  return absl::OkStatus();
}

template <typename T>
class ConcatEluOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    OP_REQUIRES(context, x.dims() >= 1,
                errors::InvalidArgument("x must have a channel axis"));
    TensorShape shape = x.shape();
    const int64_t channels = shape.dim_size(shape.dims() - 1);
    shape.set_dim(shape.dims() - 1, 2 * channels);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, shape, &y));
    if (x.NumElements() == 0) return;
    const T* in = x.flat<T>().data();
    T* out = y->flat<T>().data();
    ForEachBlock(context, x.NumElements() / channels, channels, 12,
                 [&](int64_t r, int64_t c, int64_t n) {
                   const V16 v = Lanes<T>::Load(in + r * channels + c, n);
                   const V16 m = flowpp::Expm1(v > 0 ? -v : v);
                   T* row = out + 2 * r * channels + c;
                   Lanes<T>::Store(v > 0 ? v : m, row, n);
                   Lanes<T>::Store(v > 0 ? m : -v, row + channels, n);
                 });
  }
};

template <typename T>
class ConcatEluGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& dy = context->input(1);
    OP_REQUIRES_OK(context, CheckPair(x, dy, "x", "grad_y"));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    if (x.NumElements() == 0) return;
    const int64_t channels = x.dim_size(x.dims() - 1);
    const T* in = x.flat<T>().data();
    const T* grad = dy.flat<T>().data();
    T* out = dx->flat<T>().data();
    ForEachBlock(context, x.NumElements() / channels, channels, 12,
                 [&](int64_t r, int64_t c, int64_t n) {
                   const V16 v = Lanes<T>::Load(in + r * channels + c, n);
                   const T* g = grad + 2 * r * channels + c;
                   const V16 ga = Lanes<T>::Load(g, n);
                   const V16 gb = Lanes<T>::Load(g + channels, n);
                   const V16 e = flowpp::Exp(v > 0 ? -v : v);
                   Lanes<T>::Store(v > 0 ? ga - gb * e : ga * e - gb,
                                   out + r * channels + c, n);
                 });
  }
};

template <typename T>
class GatedResidualOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& h = context->input(1);
    OP_REQUIRES_OK(context, CheckPair(x, h, "x", "h"));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    if (x.NumElements() == 0) return;
    const int64_t channels = x.dim_size(x.dims() - 1);
    const T* residual = x.flat<T>().data();
    const T* gates = h.flat<T>().data();
    T* out = y->flat<T>().data();
    ForEachBlock(context, x.NumElements() / channels, channels, 12,
                 [&](int64_t r, int64_t c, int64_t n) {
                   const T* g = gates + 2 * r * channels + c;
                   const V16 a = Lanes<T>::Load(g, n);
                   const V16 b = Lanes<T>::Load(g + channels, n);
                   const V16 v = Lanes<T>::Load(residual + r * channels + c, n);
                   Lanes<T>::Store(v + a * Sigmoid(b).value,
                                   out + r * channels + c, n);
                 });
  }
};

template <typename T>
class GatedResidualGradOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor& h = context->input(0);
    const Tensor& dy = context->input(1);
    OP_REQUIRES_OK(context, CheckPair(dy, h, "grad_y", "h"));
    Tensor* dh = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, h.shape(), &dh));
    if (h.NumElements() == 0) return;
    const int64_t channels = dy.dim_size(dy.dims() - 1);
    const T* gates = h.flat<T>().data();
    const T* grad = dy.flat<T>().data();
    T* out = dh->flat<T>().data();
    ForEachBlock(context, dy.NumElements() / channels, channels, 12,
                 [&](int64_t r, int64_t c, int64_t n) {
                   const T* g = gates + 2 * r * channels + c;
                   const V16 a = Lanes<T>::Load(g, n);
                   const V16 b = Lanes<T>::Load(g + channels, n);
                   const V16 d = Lanes<T>::Load(grad + r * channels + c, n);
                   const Sigmoids s = Sigmoid(b);
                   T* o = out + 2 * r * channels + c;
                   Lanes<T>::Store(d * s.value, o, n);
                   Lanes<T>::Store(d * a * s.slope, o + channels, n);
                 });
  }
};

#define REGISTER(T)                                                           \
  REGISTER_KERNEL_BUILDER(                                                    \
      Name("FlowppConcatElu").Device(DEVICE_CPU).TypeConstraint<T>("T"),      \
      ConcatEluOp<T>);                                                        \
  REGISTER_KERNEL_BUILDER(                                                    \
      Name("FlowppConcatEluGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
      ConcatEluGradOp<T>);                                                    \
  REGISTER_KERNEL_BUILDER(                                                    \
      Name("FlowppGatedResidual").Device(DEVICE_CPU).TypeConstraint<T>("T"),  \
      GatedResidualOp<T>);                                                    \
  REGISTER_KERNEL_BUILDER(Name("FlowppGatedResidualGrad")                     \
                              .Device(DEVICE_CPU)                             \
                              .TypeConstraint<T>("T"),                        \
                          GatedResidualGradOp<T>);

REGISTER(float)
REGISTER(bfloat16)

}  // namespace
}  // namespace tensorflow
