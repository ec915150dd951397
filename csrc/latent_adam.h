// Shared between the CPU (.cpp) and CUDA (.cu) implementations of latentseek::latent_adam_.
// Only declarations and a plain-old-data struct live here; both kernels include it.
#pragma once

#include <ATen/core/Tensor.h>

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

}  // namespace latentseek
