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
#include <ATen/core/Tensor.h>
#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>
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

std::tuple<at::Tensor, at::Tensor> threefry2x32_cpu(const at::Tensor& k0, const at::Tensor& k1,
                                                   const at::Tensor& x0, const at::Tensor& x1) {
  check_words(k0, "k0");
  check_words(k1, "k1");
  check_words(x0, "x0");
  check_words(x1, "x1");
  at::DimVector shape;
  try {
    shape = at::infer_size_dimvector(at::infer_size_dimvector(k0.sizes(), k1.sizes()),
                                     at::infer_size_dimvector(x0.sizes(), x1.sizes()));
  } catch (const c10::Error&) {
    TORCH_CHECK(false, "funcrl::threefry2x32: the words' shapes do not broadcast: k0 ",
                k0.sizes(), ", k1 ", k1.sizes(), ", x0 ", x0.sizes(), ", x1 ", x1.sizes());
  }
  // Broadcast inputs as contiguous copies; a key's two words are usually scalars.
  const auto a = k0.expand(shape).contiguous();
  const auto b = k1.expand(shape).contiguous();
  const auto c = x0.expand(shape).contiguous();
  const auto d = x1.expand(shape).contiguous();
  auto y0 = at::empty(shape, x0.options());
  auto y1 = at::empty(shape, x0.options());
  const int64_t* pa = a.const_data_ptr<int64_t>();
  const int64_t* pb = b.const_data_ptr<int64_t>();
  const int64_t* pc = c.const_data_ptr<int64_t>();
  const int64_t* pd = d.const_data_ptr<int64_t>();
  int64_t* o0 = y0.mutable_data_ptr<int64_t>();
  int64_t* o1 = y1.mutable_data_ptr<int64_t>();
  const int64_t n = y0.numel();
  for (int64_t i = 0; i < n; ++i) {
    // Words outside [0, 2**32) are reduced modulo 2**32, as the torch-op path's masks do.
    uint32_t w0 = static_cast<uint32_t>(pc[i]);
    uint32_t w1 = static_cast<uint32_t>(pd[i]);
    threefry(static_cast<uint32_t>(pa[i]), static_cast<uint32_t>(pb[i]), w0, w1);
    o0[i] = static_cast<int64_t>(w0);
    o1[i] = static_cast<int64_t>(w1);
  }
  return {y0, y1};
}

}  // namespace

TORCH_LIBRARY(funcrl, m) {
  m.def("threefry2x32(Tensor k0, Tensor k1, Tensor x0, Tensor x1) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(funcrl, CPU, m) { m.impl("threefry2x32", &threefry2x32_cpu); }
