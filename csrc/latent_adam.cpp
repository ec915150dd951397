// latentseek::latent_adam_ : the fused LatentSeek latent update, schema + CPU kernel.
//
// One Adam step (torch.optim.Adam defaults: no weight decay, no amsgrad, not maximize) on the
// latents, with the gradient g = reward * direction formed on the fly (never materialised)
// and optional total-norm clipping as torch.nn.utils.clip_grad_norm_ does it. The pointwise
// math follows the CPU kernels that torch.optim.Adam (single-tensor path) runs, in the same
// order and with the same fp32 roundings:
//   g  = (reward * direction) * clip_coef
//   m  = lerp(m, g, 1 - beta1)                     (ATen lerp: fma(w, g - m, m) for w < 0.5)
//   v  = fma((1 - beta2) * g, g, v * beta2)        (mul_ then addcmul_)
//   d  = sqrt(v) / sqrt(1 - beta2**step) + eps
//   p  = p + (-(lr / (1 - beta1**step)) * m) / d  (addcdiv_)
// With `master` the fp32 master is p and the latents are written as master rounded to their
// dtype; without it, low-precision latents are read as fp32, updated and rounded back.
//
// The CUDA implementation lives in latent_adam_cuda.cu (TORCH_LIBRARY_IMPL only).

#include "latent_adam.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <Python.h>

#include <algorithm>
#include <cmath>
#include <vector>

// An importable (empty) Python module, so `import latentseek_fast._C` loads the library and
// runs the TORCH_LIBRARY registrations below.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "latentseek_fast native ops (registered in torch.ops.latentseek)",
      -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace latentseek {

namespace {

bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

void check_2d_like(const at::Tensor& t, const char* name, const at::Tensor& latents,
                   at::ScalarType want_dtype, bool any_float) {
  TORCH_CHECK(t.sizes() == latents.sizes(), "latent_adam_: ", name, " has shape ", t.sizes(),
              "; expected the latents' shape ", latents.sizes());
  if (any_float) {
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == latents.scalar_type(),
                "latent_adam_: ", name, " has dtype ", t.scalar_type(),
                "; allowed: float32 or the latents' dtype (", latents.scalar_type(), ")");
  } else {
    TORCH_CHECK(t.scalar_type() == want_dtype, "latent_adam_: ", name, " has dtype ",
                t.scalar_type(), "; expected ", want_dtype);
  }
  TORCH_CHECK(t.device() == latents.device(), "latent_adam_: ", name, " is on ", t.device(),
              "; expected the latents' device ", latents.device());
  TORCH_CHECK(t.is_contiguous(), "latent_adam_: ", name, " must be contiguous");
}

}  // namespace

AdamScalars latent_adam_prepare(
    const at::Tensor& latents, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
    const std::optional<at::Tensor>& master, const at::Tensor& direction,
    const std::optional<at::Tensor>& reward, double reward_scalar, int64_t step, double lr,
    double beta1, double beta2, double eps, double max_grad_norm) {
  TORCH_CHECK(latents.dim() == 2, "latent_adam_: latents must be 2-D [N, d], got shape ",
              latents.sizes());
  TORCH_CHECK(is_float_dtype(latents.scalar_type()), "latent_adam_: latents have dtype ",
              latents.scalar_type(), "; allowed: float32, bfloat16, float16");
  TORCH_CHECK(latents.is_contiguous(), "latent_adam_: latents must be contiguous");
  check_2d_like(exp_avg, "exp_avg", latents, at::kFloat, false);
  check_2d_like(exp_avg_sq, "exp_avg_sq", latents, at::kFloat, false);
  check_2d_like(direction, "direction", latents, at::kFloat, true);
  if (master.has_value()) {
    check_2d_like(*master, "master", latents, at::kFloat, false);
  }
  if (reward.has_value()) {
    const at::Tensor& r = *reward;
    TORCH_CHECK(r.dim() == 1 && r.size(0) == latents.size(0), "latent_adam_: reward has shape ",
                r.sizes(), "; expected [", latents.size(0), "] (one per latent row)");
    TORCH_CHECK(r.scalar_type() == at::kFloat, "latent_adam_: reward has dtype ", r.scalar_type(),
                "; expected float32");
    TORCH_CHECK(r.device() == latents.device(), "latent_adam_: reward is on ", r.device(),
                "; expected ", latents.device());
    TORCH_CHECK(r.is_contiguous(), "latent_adam_: reward must be contiguous");
  }
  TORCH_CHECK(step >= 1, "latent_adam_: step=", step, "; expected >= 1 (1-based update count)");
  TORCH_CHECK(std::isfinite(lr) && lr >= 0.0, "latent_adam_: lr=", lr, "; expected finite >= 0");
  TORCH_CHECK(beta1 >= 0.0 && beta1 < 1.0, "latent_adam_: beta1=", beta1, "; expected [0, 1)");
  TORCH_CHECK(beta2 >= 0.0 && beta2 < 1.0, "latent_adam_: beta2=", beta2, "; expected [0, 1)");
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, "latent_adam_: eps=", eps,
              "; expected finite >= 0");
  TORCH_CHECK(std::isfinite(reward_scalar), "latent_adam_: reward=", reward_scalar,
              "; expected a finite number");
  TORCH_CHECK(std::isfinite(max_grad_norm) && max_grad_norm >= 0.0,
              "latent_adam_: max_grad_norm=", max_grad_norm, "; expected finite >= 0 (0 = off)");

  // Same double-precision scalar math as torch.optim.Adam's Python code.
  const double step_d = static_cast<double>(step);
  const double bias_correction1 = 1.0 - std::pow(beta1, step_d);
  const double bias_correction2 = 1.0 - std::pow(beta2, step_d);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);

  AdamScalars s;
  const float w = static_cast<float>(1.0 - beta1);
  s.lerp_small = std::abs(w) < 0.5f;
  s.lerp_coeff = s.lerp_small ? w : w - 1.0f;
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.bc2_sqrt = static_cast<float>(bias_correction2_sqrt);
  s.eps = static_cast<float>(eps);
  s.neg_step_size = static_cast<float>(-step_size);
  s.reward = static_cast<float>(reward_scalar);
  s.max_norm = static_cast<float>(max_grad_norm);
  return s;
}

namespace {

// Raw pointers for one call; rows have `d` contiguous elements.
template <typename p_t, typename d_t>
struct Ptrs {
  p_t* p;
  float* master;  // nullptr without master
  const d_t* dir;
  float* m;
  float* v;
  const float* reward;  // nullptr: scalar reward
  int64_t d;
};

// Elements [j0, j1) of one row. Written as a plain loop over restrict pointers that GCC
// vectorises (needs -fno-math-errno for sqrt; -ffp-contract=off keeps torch's roundings).
template <typename p_t, typename d_t, bool kMaster>
C10_ALWAYS_INLINE void update_span(p_t* __restrict__ p, float* __restrict__ master,
                                          const d_t* __restrict__ dir, float* __restrict__ m,
                                          float* __restrict__ v, int64_t n, float r, float coef,
                                          const AdamScalars& s) {
  const float lerp_coeff = s.lerp_coeff;
  const bool lerp_small = s.lerp_small;
  const float beta2 = s.beta2;
  const float omb2 = s.one_minus_beta2;
  const float bc2_sqrt = s.bc2_sqrt;
  const float eps = s.eps;
  const float neg_step = s.neg_step_size;
  for (int64_t j = 0; j < n; ++j) {
    const float g = (r * static_cast<float>(dir[j])) * coef;
    float mj = m[j];
    const float base = lerp_small ? mj : g;
    mj = __builtin_fmaf(lerp_coeff, g - mj, base);
    m[j] = mj;
    // ATen's vectorised addcmul_ is fmadd(value * t1, t2, self).
    const float vj = __builtin_fmaf(omb2 * g, g, v[j] * beta2);
    v[j] = vj;
    const float denom = std::sqrt(vj) / bc2_sqrt + eps;
    float pj;
    if constexpr (kMaster) {
      pj = master[j];
    } else {
      pj = static_cast<float>(p[j]);
    }
    pj = pj + (neg_step * mj) / denom;
    if constexpr (kMaster) {
      master[j] = pj;
    }
    p[j] = static_cast<p_t>(pj);
  }
}

// Flat elements [begin, end), split at row boundaries (for the per-row reward).
template <typename p_t, typename d_t, bool kMaster>
C10_ALWAYS_INLINE void update_range_body(const Ptrs<p_t, d_t>& a, const AdamScalars& s,
                                                float coef, int64_t begin, int64_t end) {
  int64_t i = begin;
  while (i < end) {
    const int64_t row = i / a.d;
    const int64_t stop = std::min(end, (row + 1) * a.d);
    const float r = a.reward != nullptr ? a.reward[row] : s.reward;
    update_span<p_t, d_t, kMaster>(a.p + i, kMaster ? a.master + i : nullptr, a.dir + i, a.m + i,
                                   a.v + i, stop - i, r, coef, s);
    i = stop;
  }
}

// Sum of g*g over flat elements [begin, end), in double. 32 independent lanes so the loop
// vectorises and the adds do not wait on each other (norm pass over 300 x 3584 fp32 on one
// AVX-512 core: 8 lanes 0.32 ms, 32 lanes 0.15 ms).
template <typename d_t>
C10_ALWAYS_INLINE double sumsq_range_body(const d_t* __restrict__ dir,
                                                 const float* __restrict__ reward, float rscalar,
                                                 int64_t d, int64_t begin, int64_t end) {
  constexpr int kLanes = 32;
  double acc[kLanes] = {};
  int64_t i = begin;
  while (i < end) {
    const int64_t row = i / d;
    const int64_t stop = std::min(end, (row + 1) * d);
    const float r = reward != nullptr ? reward[row] : rscalar;
    int64_t j = i;
    for (; j + kLanes <= stop; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const float g = r * static_cast<float>(dir[j + k]);
        acc[k] += static_cast<double>(g * g);
      }
    }
    for (; j < stop; ++j) {
      const float g = r * static_cast<float>(dir[j]);
      acc[0] += static_cast<double>(g * g);
    }
    i = stop;
  }
  double total = 0.0;
  for (int k = 0; k < kLanes; ++k) {
    total += acc[k];
  }
  return total;
}

// Two builds of each loop: portable, and (x86-64 with GCC/Clang) AVX2+FMA picked at run time.
template <typename p_t, typename d_t, bool kMaster>
void update_range_default(const Ptrs<p_t, d_t>& a, const AdamScalars& s, float coef,
                          int64_t begin, int64_t end) {
  update_range_body<p_t, d_t, kMaster>(a, s, coef, begin, end);
}

template <typename d_t>
double sumsq_range_default(const d_t* dir, const float* reward, float rscalar, int64_t d,
                           int64_t begin, int64_t end) {
  return sumsq_range_body<d_t>(dir, reward, rscalar, d, begin, end);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LATENTSEEK_HAVE_AVX2_CLONE 1
template <typename p_t, typename d_t, bool kMaster>
__attribute__((target("avx2,fma"))) void update_range_avx2(const Ptrs<p_t, d_t>& a,
                                                           const AdamScalars& s, float coef,
                                                           int64_t begin, int64_t end) {
  update_range_body<p_t, d_t, kMaster>(a, s, coef, begin, end);
}

template <typename d_t>
__attribute__((target("avx2,fma"))) double sumsq_range_avx2(const d_t* dir, const float* reward,
                                                           float rscalar, int64_t d,
                                                           int64_t begin, int64_t end) {
  return sumsq_range_body<d_t>(dir, reward, rscalar, d, begin, end);
}

bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// Elements per task of the update pass: ATen's usual grain (32768); at N=300, d=3584 this
// gives ~33 tasks, plenty for the thread pool, and each task streams ~650 KB.
constexpr int64_t kUpdateGrain = 32768;
// Fixed chunking of the norm reduction, so the sum (and so the clip) does not depend on the
// number of threads.
constexpr int64_t kNormChunk = 16384;

template <typename d_t>
float total_norm_cpu(const d_t* dir, const float* reward, float rscalar, int64_t d,
                     int64_t numel) {
  const int64_t nchunks = (numel + kNormChunk - 1) / kNormChunk;
  std::vector<double> partial(static_cast<size_t>(nchunks), 0.0);
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kNormChunk;
      const int64_t e = std::min(numel, b + kNormChunk);
#ifdef LATENTSEEK_HAVE_AVX2_CLONE
      partial[c] = cpu_has_avx2_fma() ? sumsq_range_avx2<d_t>(dir, reward, rscalar, d, b, e)
                                      : sumsq_range_default<d_t>(dir, reward, rscalar, d, b, e);
#else
      partial[c] = sumsq_range_default<d_t>(dir, reward, rscalar, d, b, e);
#endif
    }
  });
  double total = 0.0;
  for (double x : partial) {
    total += x;
  }
  return static_cast<float>(std::sqrt(total));
}

template <typename p_t, typename d_t, bool kMaster>
void run_cpu(const Ptrs<p_t, d_t>& a, const AdamScalars& s, int64_t numel) {
  float coef = 1.0f;
  if (s.max_norm > 0.0f) {
    // clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, in fp32.
    const float total_norm = total_norm_cpu<d_t>(a.dir, a.reward, s.reward, a.d, numel);
    coef = std::min(s.max_norm / (total_norm + 1e-6f), 1.0f);
  }
  at::parallel_for(0, numel, kUpdateGrain, [&](int64_t b, int64_t e) {
#ifdef LATENTSEEK_HAVE_AVX2_CLONE
    if (cpu_has_avx2_fma()) {
      update_range_avx2<p_t, d_t, kMaster>(a, s, coef, b, e);
      return;
    }
#endif
    update_range_default<p_t, d_t, kMaster>(a, s, coef, b, e);
  });
}

void latent_adam_cpu(const at::Tensor& latents, const at::Tensor& exp_avg,
                     const at::Tensor& exp_avg_sq, const std::optional<at::Tensor>& master,
                     const at::Tensor& direction, const std::optional<at::Tensor>& reward,
                     double reward_scalar, int64_t step, double lr, double beta1, double beta2,
                     double eps, double max_grad_norm) {
  const AdamScalars s =
      latent_adam_prepare(latents, exp_avg, exp_avg_sq, master, direction, reward, reward_scalar,
                          step, lr, beta1, beta2, eps, max_grad_norm);
  TORCH_CHECK(latents.device().is_cpu(), "latent_adam_ (CPU kernel): latents are on ",
              latents.device());
  if (latents.numel() == 0) {
    return;
  }
  dispatch_latent_adam(latents, direction, master.has_value(), [&](auto types) {
    using T = decltype(types);
    Ptrs<typename T::p_t, typename T::d_t> a;
    a.p = latents.data_ptr<typename T::p_t>();
    a.master = T::kMaster ? master->data_ptr<float>() : nullptr;
    a.dir = direction.const_data_ptr<typename T::d_t>();
    a.m = exp_avg.data_ptr<float>();
    a.v = exp_avg_sq.data_ptr<float>();
    a.reward = reward.has_value() ? reward->const_data_ptr<float>() : nullptr;
    a.d = latents.size(1);
    run_cpu<typename T::p_t, typename T::d_t, T::kMaster>(a, s, latents.numel());
  });
}

}  // namespace

TORCH_LIBRARY(latentseek, m) {
  // Fake (meta) kernel: latentseek_fast/_ext.py, registered when it loads this extension.
  m.set_python_module("latentseek_fast._ext");
  m.def(
      "latent_adam_(Tensor(a!) latents, Tensor(b!) exp_avg, Tensor(c!) exp_avg_sq, "
      "Tensor(d!)? master, Tensor direction, Tensor? reward, float reward_scalar, int step, "
      "float lr, float beta1, float beta2, float eps, float max_grad_norm) -> ()");
}

TORCH_LIBRARY_IMPL(latentseek, CPU, m) {
  m.impl("latent_adam_", &latent_adam_cpu);
}

}  // namespace latentseek
