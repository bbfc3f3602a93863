// The readout MLP's elementwise passes (CPU), fused: phi(x) = relu(relu(x W1 + b1) W2 + b2) . w3 + b3
// for S seeds at once, each seed's rows (S, R, W) with its own biases and readout.
//
// The matmuls stay torch's (bmm); these four functions do everything between them, each in one
// pass over the (S, R, W) activations where torch takes two to five (a broadcast copy of the
// bias, the ReLU, the readout's product and its sum, the masks and the bias gradients):
//
//   bias_relu_(h, b)                 h = relu(h + b), in place              (after x W1)
//   readout_forward_(h, b, w3, b3)   h = relu(h + b) in place; returns h . w3 + b3  (after h1 W2)
//   readout_backward(g, h, w3)       ga = [h > 0] g w3;  gw3 = sum_r g h;  gb = sum_r ga
//   relu_backward_(gh, h)            gh = [h > 0] gh in place;  gb = sum_r gh
//
// ReLU and its mask follow torch's NaN semantics (clamp_min and threshold_backward: a NaN
// passes through), so a diverging run still shows a non-finite loss.  Sums over rows run in
// row order per seed, so a seed's numbers do not depend on which other seeds share the call
// (grid batching, docs/engine.md).  The arguments must not overlap (the loops assume no
// aliasing), and the in-place writes bypass autograd's version counters: callers pass tensors
// they own, as _MLPSGD does (fresh bmm outputs).
//
// icl_kinetics/simulate/models.py (_MLPSGD) calls them; the
// torch code there is the reference they are tested against (tests/test_kernels.py).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <vector>

namespace {

template <typename T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;  // NaN passes, as in torch.relu
}

template <typename T>
inline T masked(T h, T g) {
  return h <= T(0) ? T(0) : g;  // torch's threshold_backward(g, h, 0): a NaN h passes g
}

template <typename T>
void bias_relu_impl(T* __restrict h, const T* __restrict b, int64_t S, int64_t R, int64_t W) {
  for (int64_t s = 0; s < S; ++s) {
    const T* bs = b + s * W;
    for (int64_t r = 0; r < R; ++r) {
      T* x = h + (s * R + r) * W;
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) x[j] = relu(x[j] + bs[j]);
    }
  }
}

template <typename T>
void readout_forward_impl(T* __restrict h, const T* __restrict b, const T* __restrict w3, const T* __restrict b3,
                          T* __restrict out, int64_t S, int64_t R, int64_t W) {
  for (int64_t s = 0; s < S; ++s) {
    const T* bs = b + s * W;
    const T* ws = w3 + s * W;
    for (int64_t r = 0; r < R; ++r) {
      T* x = h + (s * R + r) * W;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < W; ++j) {
        const T v = relu(x[j] + bs[j]);
        x[j] = v;
        acc += v * ws[j];
      }
      out[s * R + r] = acc + b3[s];
    }
  }
}

template <typename T>
void readout_backward_impl(const T* __restrict g, const T* __restrict h, const T* __restrict w3, T* __restrict ga,
                           T* __restrict gw3, T* __restrict gb, int64_t S, int64_t R, int64_t W) {
  for (int64_t s = 0; s < S; ++s) {
    const T* ws = w3 + s * W;
    T* gws = gw3 + s * W;
    T* gbs = gb + s * W;
    for (int64_t j = 0; j < W; ++j) gws[j] = gbs[j] = T(0);
    for (int64_t r = 0; r < R; ++r) {
      const T gr = g[s * R + r];
      const T* x = h + (s * R + r) * W;
      T* y = ga + (s * R + r) * W;
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) {
        const T v = masked(x[j], gr * ws[j]);
        y[j] = v;
        gws[j] += gr * x[j];
        gbs[j] += v;
      }
    }
  }
}

template <typename T>
void relu_backward_impl(T* __restrict gh, const T* __restrict h, T* __restrict gb, int64_t S, int64_t R, int64_t W) {
  for (int64_t s = 0; s < S; ++s) {
    T* gbs = gb + s * W;
    for (int64_t j = 0; j < W; ++j) gbs[j] = T(0);
    for (int64_t r = 0; r < R; ++r) {
      T* y = gh + (s * R + r) * W;
      const T* x = h + (s * R + r) * W;
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) {
        const T v = masked(x[j], y[j]);
        y[j] = v;
        gbs[j] += v;
      }
    }
  }
}

void check_rows(const at::Tensor& h, const char* name) {
  TORCH_CHECK(h.dim() == 3 && h.is_contiguous() && h.device().is_cpu(), name, " must be a contiguous CPU (S, R, W) tensor");
}

void check_per_seed(const at::Tensor& v, const at::Tensor& h, int64_t n, const char* name) {
  TORCH_CHECK(v.is_contiguous() && v.scalar_type() == h.scalar_type() && v.device().is_cpu() && v.size(0) == h.size(0) &&
                  v.numel() == h.size(0) * n,
              name, " must be a contiguous CPU tensor of ", n, " values per seed, of the activations' dtype");
}

}  // namespace

void mlp_bias_relu_(at::Tensor h, at::Tensor b) {
  check_rows(h, "h");
  const int64_t S = h.size(0), R = h.size(1), W = h.size(2);
  check_per_seed(b, h, W, "b");
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlp_bias_relu_", [&] {
    bias_relu_impl<scalar_t>(h.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), S, R, W);
  });
}

at::Tensor mlp_readout_forward_(at::Tensor h, at::Tensor b, at::Tensor w3, at::Tensor b3) {
  check_rows(h, "h");
  const int64_t S = h.size(0), R = h.size(1), W = h.size(2);
  check_per_seed(b, h, W, "b");
  check_per_seed(w3, h, W, "w3");
  check_per_seed(b3, h, 1, "b3");
  auto out = at::empty({S, R, 1}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlp_readout_forward_", [&] {
    readout_forward_impl<scalar_t>(h.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), w3.data_ptr<scalar_t>(),
                                   b3.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), S, R, W);
  });
  return out;
}

std::vector<at::Tensor> mlp_readout_backward(at::Tensor g, at::Tensor h, at::Tensor w3) {
  check_rows(h, "h");
  const int64_t S = h.size(0), R = h.size(1), W = h.size(2);
  check_per_seed(g, h, R, "g");
  check_per_seed(w3, h, W, "w3");
  auto ga = at::empty_like(h);
  auto gw3 = at::empty({S, W, 1}, h.options());
  auto gb = at::empty({S, W}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlp_readout_backward", [&] {
    readout_backward_impl<scalar_t>(g.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), w3.data_ptr<scalar_t>(),
                                    ga.data_ptr<scalar_t>(), gw3.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), S, R, W);
  });
  return {ga, gw3, gb};
}

at::Tensor mlp_relu_backward_(at::Tensor gh, at::Tensor h) {
  check_rows(h, "h");
  check_rows(gh, "gh");
  TORCH_CHECK(gh.sizes() == h.sizes() && gh.scalar_type() == h.scalar_type(), "gh must be like h");
  const int64_t S = h.size(0), R = h.size(1), W = h.size(2);
  auto gb = at::empty({S, W}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "mlp_relu_backward_", [&] {
    relu_backward_impl<scalar_t>(gh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), S, R, W);
  });
  return gb;
}
