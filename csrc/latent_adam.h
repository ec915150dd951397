// Shared between the CPU (.cpp) and CUDA (.cu) implementations of latentseek::latent_adam_.
// Declarations, a plain-old-data struct and the one dtype dispatch; both kernels include it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <optional>

namespace latentseek {

// Per-step scalars, computed once on the host in double (as torch.optim.Adam does in Python)
// and rounded to fp32 where the tensor ops of torch.optim.Adam round them.
struct AdamScalars {
  float lerp_coeff;      // exp_avg.lerp_(g, w): w when |w| < 0.5, else w - 1 (ATen's lerp formula)
  bool lerp_small;       // |w| < 0.5: base is exp_avg, else base is g
  float beta2;           // exp_avg_sq.mul_(beta2)
  float one_minus_beta2; // exp_avg_sq.addcmul_(g, g, value=1 - beta2)
  float bc2_sqrt;        // (1 - beta2**step) ** 0.5
  float eps;             // denom = sqrt(v) / bc2_sqrt + eps
  float neg_step_size;   // -(lr / (1 - beta1**step)), the addcdiv_ value
  float reward;          // scalar reward (used when no per-row reward tensor is given)
  float max_norm;        // clip threshold; <= 0 means no clipping
};

// Validates the op's arguments (TORCH_CHECK; the Python wrapper raises friendlier ValueErrors
// first) and returns the per-step scalars.
AdamScalars latent_adam_prepare(
    const at::Tensor& latents, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
    const std::optional<at::Tensor>& master, const at::Tensor& direction,
    const std::optional<at::Tensor>& reward, double reward_scalar, int64_t step, double lr,
    double beta1, double beta2, double eps, double max_grad_norm);

// The element types and master switch one kernel instantiation is for, carried as a value so a
// generic lambda (C++14; nvcc builds .cu files as C++17) can receive them.
template <typename P, typename D, bool kMasterV>
struct LatentTypes {
  using p_t = P;  // latents: float, c10::BFloat16 or c10::Half
  using d_t = D;  // direction: float, or p_t for a low-precision direction
  static constexpr bool kMaster = kMasterV;  // an fp32 master copy is given
};

// The single dtype switch of both kernels: calls fn(LatentTypes<p_t, d_t, kMaster>{}) for the
// latents' and direction's dtypes (latent_adam_prepare allows no other combination) and
// whether a master is given. Every supported combination is instantiated here, once for the CPU
// and once for the CUDA translation unit.
template <typename Fn>
void dispatch_latent_adam(const at::Tensor& latents, const at::Tensor& direction, bool has_master,
                          Fn&& fn) {
  const bool dir_f32 = direction.scalar_type() == at::kFloat;
  auto with = [&](auto p_value, auto d_value) {
    using P = decltype(p_value);
    using D = decltype(d_value);
    if (has_master) {
      fn(LatentTypes<P, D, true>{});
    } else {
      fn(LatentTypes<P, D, false>{});
    }
  };
  switch (latents.scalar_type()) {
    case at::kFloat:
      with(float{}, float{});
      break;
    case at::kBFloat16:
      dir_f32 ? with(c10::BFloat16{}, float{}) : with(c10::BFloat16{}, c10::BFloat16{});
      break;
    case at::kHalf:
      dir_f32 ? with(c10::Half{}, float{}) : with(c10::Half{}, c10::Half{});
      break;
    default:
      TORCH_CHECK(false, "latent_adam_: unsupported latents dtype ", latents.scalar_type());
  }
}

}  // namespace latentseek
