// Threefry-2x32 (20 rounds) as one CPU operator, funcrl::threefry2x32, for funcrl.random.
//
// Why: written as torch ops (int64 words masked to 32 bits), one Threefry is ~170 integer ops.
// Under torch.compile, Inductor generates, for every draw in a graph, a fused C++ kernel of all
// of them (scalar, vectorized and tail loops), and that code generation was about two thirds of
// the cold compile of a pure PPO iteration (218.6 s against 69.6 s with a 6-op stand-in hash,
// docs/results.md). As an operator, a draw is one call Inductor only has to emit.
//
// Same bits as funcrl.random's torch-op path: the words are uint32 values held in int64 tensors,
// and every sum wraps modulo 2**32 as the masks do there.
//
// Built at first use against the running torch's headers (funcrl/_native.py). The schema and the
// fake (meta) and vmap rules are registered from Python (funcrl/random.py), so this file only has
// the CPU kernel.
#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

namespace {

constexpr uint32_t kParity = 0x1BD11BDA;  // Skein's key-schedule parity constant
constexpr int kRotations[2][4] = {{13, 15, 26, 6}, {17, 29, 16, 24}};

inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline void threefry(uint32_t k0, uint32_t k1, uint32_t& x0, uint32_t& x1) {
  const uint32_t ks[3] = {k0, k1, k0 ^ k1 ^ kParity};
  x0 += ks[0];
  x1 += ks[1];
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 4; ++j) {
      x0 += x1;
      x1 = rotl(x1, kRotations[i % 2][j]) ^ x0;
    }
    x0 += ks[(i + 1) % 3];
    x1 += ks[(i + 2) % 3] + static_cast<uint32_t>(i + 1);
  }
}

void check_words(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "funcrl::threefry2x32: ", name,
              " must be int64 (uint32 words), got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), "funcrl::threefry2x32: ", name, " must be on the CPU, got ",
              t.device());
}

constexpr int kMaxDims = 16;

// One input read through its broadcast strides (0 along broadcast dims), so that no expanded
// copy is made: a call costs a few microseconds, and a compiled rollout makes one per step.
struct Operand {
  const int64_t* data;
  int64_t strides[kMaxDims];
  bool dense;  // contiguous with the output's shape: read at the flat index
  bool scalar;  // one element: read at 0
};

Operand operand(const at::Tensor& t, const c10::SmallVector<int64_t, kMaxDims>& shape,
                int64_t n) {
  Operand o{t.const_data_ptr<int64_t>(), {}, false, t.numel() == 1};
  const int64_t ndim = static_cast<int64_t>(shape.size());
  const int64_t offset = ndim - t.dim();
  for (int64_t i = 0; i < ndim; ++i) {
    const int64_t j = i - offset;
    o.strides[i] = (j < 0 || t.size(j) == 1) ? 0 : t.stride(j);
  }
  o.dense = t.numel() == n && t.is_contiguous();
  return o;
}

std::tuple<at::Tensor, at::Tensor> threefry2x32_cpu(const at::Tensor& k0, const at::Tensor& k1,
                                                   const at::Tensor& x0, const at::Tensor& x1) {
  check_words(k0, "k0");
  check_words(k1, "k1");
  check_words(x0, "x0");
  check_words(x1, "x1");
  const at::Tensor* words[4] = {&k0, &k1, &x0, &x1};
  int64_t ndim = 0;
  for (const auto* w : words) ndim = std::max<int64_t>(ndim, w->dim());
  TORCH_CHECK(ndim <= kMaxDims, "funcrl::threefry2x32: at most ", kMaxDims, " dims, got ", ndim);
  c10::SmallVector<int64_t, kMaxDims> shape(ndim, 1);
  for (const auto* w : words) {
    const int64_t offset = ndim - w->dim();
    for (int64_t j = 0; j < w->dim(); ++j) {
      int64_t& s = shape[offset + j];
      const int64_t d = w->size(j);
      TORCH_CHECK(d == s || d == 1 || s == 1,
                  "funcrl::threefry2x32: the words' shapes do not broadcast: k0 ", k0.sizes(),
                  ", k1 ", k1.sizes(), ", x0 ", x0.sizes(), ", x1 ", x1.sizes());
      if (s == 1) s = d;
    }
  }
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  at::Tensor y0 = at::detail::empty_cpu(shape, at::kLong, std::nullopt, std::nullopt, std::nullopt,
                                  std::nullopt);
  at::Tensor y1 = at::detail::empty_cpu(shape, at::kLong, std::nullopt, std::nullopt, std::nullopt,
                                  std::nullopt);
  if (n == 0) return {y0, y1};
  int64_t* o0 = y0.mutable_data_ptr<int64_t>();
  int64_t* o1 = y1.mutable_data_ptr<int64_t>();
  const Operand a = operand(k0, shape, n), b = operand(k1, shape, n);
  const Operand c = operand(x0, shape, n), d = operand(x1, shape, n);
  // Words outside [0, 2**32) are reduced modulo 2**32, as the torch-op path's masks do.
  auto one = [&](int64_t i, int64_t ia, int64_t ib, int64_t ic, int64_t id) {
    uint32_t w0 = static_cast<uint32_t>(c.data[ic]);
    uint32_t w1 = static_cast<uint32_t>(d.data[id]);
    threefry(static_cast<uint32_t>(a.data[ia]), static_cast<uint32_t>(b.data[ib]), w0, w1);
    o0[i] = static_cast<int64_t>(w0);
    o1[i] = static_cast<int64_t>(w1);
  };
  const bool flat = (a.dense || a.scalar) && (b.dense || b.scalar) && (c.dense || c.scalar) &&
                    (d.dense || d.scalar);
  if (flat) {
    // The usual case (a key's scalar words and a counter vector): flat indices, no counter.
    const int64_t sa = a.scalar ? 0 : 1, sb = b.scalar ? 0 : 1;
    const int64_t sc = c.scalar ? 0 : 1, sd = d.scalar ? 0 : 1;
    for (int64_t i = 0; i < n; ++i) one(i, i * sa, i * sb, i * sc, i * sd);
    return {y0, y1};
  }
  int64_t index[kMaxDims] = {0};
  int64_t ia = 0, ib = 0, ic = 0, id = 0;
  for (int64_t i = 0; i < n; ++i) {
    one(i, ia, ib, ic, id);
    // Advance the multi-index (last dim fastest) and the four offsets with it.
    for (int64_t dim = ndim - 1; dim >= 0; --dim) {
      ia += a.strides[dim];
      ib += b.strides[dim];
      ic += c.strides[dim];
      id += d.strides[dim];
      if (++index[dim] < shape[dim]) break;
      ia -= a.strides[dim] * shape[dim];
      ib -= b.strides[dim] * shape[dim];
      ic -= c.strides[dim] * shape[dim];
      id -= d.strides[dim] * shape[dim];
      index[dim] = 0;
    }
  }
  return {y0, y1};
}

}  // namespace

TORCH_LIBRARY(funcrl, m) {
  m.def("threefry2x32(Tensor k0, Tensor k1, Tensor x0, Tensor x1) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(funcrl, CPU, m) { m.impl("threefry2x32", &threefry2x32_cpu); }
