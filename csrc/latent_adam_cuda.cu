// latentseek::latent_adam_ : CUDA implementation (the schema is defined in latent_adam.cpp).
//
// Same math and fp32 rounding order as the CPU kernel (see latent_adam.cpp); every step uses an
// explicit round-to-nearest intrinsic (__fmul_rn, __fdiv_rn, __fsqrt_rn, ...), so neither
// --use_fast_math nor nvcc's default --fmad=true can change the result.
//
// Launches, all on the current stream, no host synchronisation:
//   no clipping: 1 kernel (update);
//   clipping:    2 kernels: sumsq_kernel writes one fp64 partial sum per block into a small
//                buffer; every block of update_kernel sums those partials in a fixed order
//                (deterministic) and derives clip_coef itself.

#include "latent_adam.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>

namespace latentseek {
namespace {

// 256 threads per block: 8 warps, enough to hide latency in a purely streaming kernel.
constexpr int kThreads = 256;
// Upper bound on norm partial sums; the count depends only on numel (deterministic sums).
constexpr int kMaxNormBlocks = 1024;

__device__ __forceinline__ double block_sum(double x, double* shared /* kThreads / 32 */) {
  for (int off = 16; off > 0; off >>= 1) {
    x += __shfl_down_sync(0xffffffffu, x, off);
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) {
    shared[warp] = x;
  }
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) {
      total += shared[w];
    }
  }
  return total;  // valid in thread 0 only
}

// partial[blockIdx.x] = sum over this block's elements of (reward * direction)^2.
template <typename d_t>
__global__ void __launch_bounds__(kThreads)
    sumsq_kernel(const d_t* __restrict__ dir_ptr,      // [N, d] direction, contiguous
                 const float* __restrict__ reward_ptr, // [N] per-row reward or nullptr
                 float reward_scalar,                  // used when reward_ptr is nullptr
                 int64_t d, int64_t numel,
                 double* __restrict__ partial_ptr) {   // [gridDim.x] output
  __shared__ double shared[kThreads / 32];
  double acc = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel;
       i += stride) {
    const float r = reward_ptr != nullptr ? reward_ptr[i / d] : reward_scalar;
    const float g = __fmul_rn(r, static_cast<float>(dir_ptr[i]));
    acc += static_cast<double>(__fmul_rn(g, g));
  }
  const double total = block_sum(acc, shared);
  if (threadIdx.x == 0) {
    partial_ptr[blockIdx.x] = total;
  }
}

template <typename p_t, typename d_t, bool kMaster, bool kClip>
__global__ void __launch_bounds__(kThreads)
    update_kernel(p_t* __restrict__ p_ptr,              // [N, d] latents, updated in place
                  float* __restrict__ master_ptr,       // [N, d] fp32 master or nullptr
                  const d_t* __restrict__ dir_ptr,      // [N, d] direction
                  float* __restrict__ m_ptr,            // [N, d] exp_avg
                  float* __restrict__ v_ptr,            // [N, d] exp_avg_sq
                  const float* __restrict__ reward_ptr, // [N] or nullptr
                  int64_t d, int64_t numel,
                  AdamScalars s,
                  const double* __restrict__ partial_ptr,  // [n_partial] (kClip only)
                  int n_partial) {
  float coef = 1.0f;
  if constexpr (kClip) {
    __shared__ double shared[kThreads / 32];
    __shared__ float coef_shared;
    double acc = 0.0;
    for (int k = threadIdx.x; k < n_partial; k += kThreads) {
      acc += partial_ptr[k];
    }
    const double total = block_sum(acc, shared);
    if (threadIdx.x == 0) {
      // clip_grad_norm_: max_norm / (total_norm + 1e-6), clamped to 1, in fp32.
      const float total_norm = static_cast<float>(sqrt(total));
      coef_shared = fminf(__fdiv_rn(s.max_norm, __fadd_rn(total_norm, 1e-6f)), 1.0f);
    }
    __syncthreads();
    coef = coef_shared;
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel;
       i += stride) {
    const float r = reward_ptr != nullptr ? reward_ptr[i / d] : s.reward;
    const float g = __fmul_rn(__fmul_rn(r, static_cast<float>(dir_ptr[i])), coef);
    float mj = m_ptr[i];
    const float base = s.lerp_small ? mj : g;
    mj = __fmaf_rn(s.lerp_coeff, __fsub_rn(g, mj), base);
    m_ptr[i] = mj;
    const float vj = __fmaf_rn(__fmul_rn(s.one_minus_beta2, g), g, __fmul_rn(v_ptr[i], s.beta2));
    v_ptr[i] = vj;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), s.bc2_sqrt), s.eps);
    float pj;
    if constexpr (kMaster) {
      pj = master_ptr[i];
    } else {
      pj = static_cast<float>(p_ptr[i]);
    }
    pj = __fadd_rn(pj, __fdiv_rn(__fmul_rn(s.neg_step_size, mj), denom));
    if constexpr (kMaster) {
      master_ptr[i] = pj;
    }
    p_ptr[i] = static_cast<p_t>(pj);
  }
}

template <typename p_t, typename d_t, bool kMaster>
void launch(const at::Tensor& latents, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
            const std::optional<at::Tensor>& master, const at::Tensor& direction,
            const std::optional<at::Tensor>& reward, const AdamScalars& s) {
  const int64_t numel = latents.numel();
  const int64_t d = latents.size(1);
  // c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream forwards to; the
  // c10 headers avoid ATen/cuda/CUDAContext.h, which needs the cuSPARSE/cuBLAS headers.
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        latents.device().index()));
  const int64_t needed = (numel + kThreads - 1) / kThreads;
  // 8 resident blocks of 256 threads per SM saturate bandwidth; beyond that, grid-stride.
  const int update_blocks = static_cast<int>(std::min<int64_t>(needed, int64_t{sms} * 8));

  p_t* p_ptr = latents.data_ptr<p_t>();
  float* master_ptr = master.has_value() ? master->data_ptr<float>() : nullptr;
  const d_t* dir_ptr = direction.const_data_ptr<d_t>();
  float* m_ptr = exp_avg.data_ptr<float>();
  float* v_ptr = exp_avg_sq.data_ptr<float>();
  const float* reward_ptr = reward.has_value() ? reward->const_data_ptr<float>() : nullptr;

  if (s.max_norm > 0.0f) {
    const int norm_blocks = static_cast<int>(std::min<int64_t>(needed, kMaxNormBlocks));
    at::Tensor partial = at::empty({norm_blocks}, latents.options().dtype(at::kDouble));
    sumsq_kernel<d_t><<<norm_blocks, kThreads, 0, stream>>>(dir_ptr, reward_ptr, s.reward, d,
                                                            numel, partial.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    update_kernel<p_t, d_t, kMaster, true><<<update_blocks, kThreads, 0, stream>>>(
        p_ptr, master_ptr, dir_ptr, m_ptr, v_ptr, reward_ptr, d, numel, s,
        partial.const_data_ptr<double>(), norm_blocks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    update_kernel<p_t, d_t, kMaster, false><<<update_blocks, kThreads, 0, stream>>>(
        p_ptr, master_ptr, dir_ptr, m_ptr, v_ptr, reward_ptr, d, numel, s, nullptr, 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void latent_adam_cuda(const at::Tensor& latents, const at::Tensor& exp_avg,
                      const at::Tensor& exp_avg_sq, const std::optional<at::Tensor>& master,
                      const at::Tensor& direction, const std::optional<at::Tensor>& reward,
                      double reward_scalar, int64_t step, double lr, double beta1, double beta2,
                      double eps, double max_grad_norm) {
  const AdamScalars s =
      latent_adam_prepare(latents, exp_avg, exp_avg_sq, master, direction, reward, reward_scalar,
                          step, lr, beta1, beta2, eps, max_grad_norm);
  TORCH_CHECK(latents.is_cuda(), "latent_adam_ (CUDA kernel): latents are on ", latents.device());
  if (latents.numel() == 0) {
    return;
  }
  const c10::cuda::CUDAGuard guard(latents.device());
  dispatch_latent_adam(latents, direction, master.has_value(), [&](auto types) {
    using T = decltype(types);
    launch<typename T::p_t, typename T::d_t, T::kMaster>(latents, exp_avg, exp_avg_sq, master,
                                                          direction, reward, s);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(latentseek, CUDA, m) {
  m.impl("latent_adam_", &latent_adam_cuda);
}

}  // namespace latentseek
