// Fused gather-attention for the one-layer transformer's last-token path (CPU).
//
// Sequence r has L = N + 1 token rows: ctx_table[ctx_idx[r, j]] for j < N, then
// tgt_table[tgt_idx[r]] (the target itself).  With a query-key vector a_r:
//
//   forward:   s_rj = a_r . x_rj,   p_r = softmax_j(s_r),   m_r = sum_j p_rj x_rj
//   backward:  g_rj = gm_r . x_rj + gp_rj,   gs_rj = p_rj (g_rj - sum_k p_rk g_rk),
//              ga_r = sum_j gs_rj x_rj
//
// The rows are read straight from the (small, cache-resident) token tables: the
// (R, L, D) tensor of gathered rows is never written.  Each sequence's rows are read
// once per direction: the second pass over them hits L1.  Every index is checked
// against its table.  icl_kinetics/simulate/kernels.py loads it (bindings.cpp names it in
// the module) and holds the torch reference implementation it is tested against
// (tests/test_kernels.py).
#include <torch/extension.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

template <typename T>
inline const T* row_of(const T* ctab, const T* ttab, const int64_t* ci, const int64_t* ti, int64_t r, int64_t j,
                       int64_t N, int64_t D) {
  return j < N ? ctab + ci[r * N + j] * D : ttab + ti[r] * D;
}

// The rows are random rows of a table that fits in L3 but not L2: a demand load of each
// waits on the cache, and the hardware prefetcher cannot guess the next row.  So each
// pass over a sequence's rows asks for the row PF positions ahead (all its cache lines)
// while it works on the current one: forward + backward 1.28x faster at the paper's
// shapes (benchmarks/bench_kernel.py: side by side with this kernel built without them).
template <typename T>
inline void prefetch_row(const T* x, int64_t D) {
#ifdef ICL_KINETICS_NO_PREFETCH  // benchmarks/bench_kernel.py builds this variant to compare
  return;
#endif
  const char* c = reinterpret_cast<const char*>(x);
  for (int64_t b = 0; b < D * (int64_t)sizeof(T); b += 64) __builtin_prefetch(c + b, 0, 3);
  __builtin_prefetch(c + D * sizeof(T) - 1, 0, 3);
}

constexpr int64_t PF = 16;  // rows ahead (8 and 4 measured slower)

// DC > 0: the token width known at compile time (the paper's 65), so that the
// accumulators live in registers; DC = 0: any width D.
template <typename T, int DC>
void forward_impl(const T* __restrict a, const T* __restrict ctab, const T* __restrict ttab,
                  const int64_t* __restrict ci, const int64_t* __restrict ti, T* __restrict p, T* __restrict m,
                  int64_t R, int64_t N, int64_t Dr, int64_t Mc, int64_t Mt) {
  const int64_t D = DC > 0 ? DC : Dr;
  const int64_t L = N + 1;
  for (int64_t r = 0; r < R; ++r) {
    // every index is checked once, here; the backward pass reads the same ones
    TORCH_CHECK(ti[r] >= 0 && ti[r] < Mt, "tgt_idx out of range: ", ti[r], " (table has ", Mt, " rows)");
    for (int64_t j = 0; j < N; ++j) {
      const int64_t k = ci[r * N + j];
      TORCH_CHECK(k >= 0 && k < Mc, "ctx_idx out of range: ", k, " (table has ", Mc, " rows)");
    }
    const T* ar = a + r * D;
    T* pr = p + r * L;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < PF && j < L; ++j) prefetch_row(row_of(ctab, ttab, ci, ti, r, j, N, D), D);
    for (int64_t j = 0; j < L; ++j) {
      if (j + PF < L) prefetch_row(row_of(ctab, ttab, ci, ti, r, j + PF, N, D), D);
      const T* x = row_of(ctab, ttab, ci, ti, r, j, N, D);
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += ar[d] * x[d];
      pr[j] = s;
      mx = s > mx ? s : mx;
    }
    T z = 0;
    for (int64_t j = 0; j < L; ++j) {
      pr[j] = std::exp(pr[j] - mx);
      z += pr[j];
    }
    const T inv = T(1) / z;
    T acc[DC > 0 ? DC : 1];
    T* mr = DC > 0 ? acc : m + r * D;
    for (int64_t d = 0; d < D; ++d) mr[d] = 0;
    for (int64_t j = 0; j < L; ++j) {
      pr[j] *= inv;
      const T pj = pr[j];
      const T* x = row_of(ctab, ttab, ci, ti, r, j, N, D);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) mr[d] += pj * x[d];
    }
    if (DC > 0)
      for (int64_t d = 0; d < D; ++d) m[r * D + d] = acc[d];
  }
}

template <typename T>
void backward_impl(const T* gp, const T* gm, const T* p, const T* ctab, const T* ttab, const int64_t* ci,
                   const int64_t* ti, T* ga, int64_t R, int64_t N, int64_t D) {
  // (a width known at compile time, as in forward_impl, measured slower here)
  const int64_t L = N + 1;
  std::vector<T> g(L);
  for (int64_t r = 0; r < R; ++r) {
    const T* gmr = gm + r * D;
    const T* pr = p + r * L;
    T dot = 0;
    for (int64_t j = 0; j < PF && j < L; ++j) prefetch_row(row_of(ctab, ttab, ci, ti, r, j, N, D), D);
    for (int64_t j = 0; j < L; ++j) {
      if (j + PF < L) prefetch_row(row_of(ctab, ttab, ci, ti, r, j + PF, N, D), D);
      const T* x = row_of(ctab, ttab, ci, ti, r, j, N, D);
      T s = gp ? gp[r * L + j] : T(0);
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += gmr[d] * x[d];
      g[j] = s;
      dot += pr[j] * s;
    }
    T* gar = ga + r * D;
    for (int64_t d = 0; d < D; ++d) gar[d] = 0;
    for (int64_t j = 0; j < L; ++j) {
      const T gs = pr[j] * (g[j] - dot);
      const T* x = row_of(ctab, ttab, ci, ti, r, j, N, D);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) gar[d] += gs * x[d];
    }
  }
}

void check_common(const torch::Tensor& ctab, const torch::Tensor& ttab, const torch::Tensor& ci,
                  const torch::Tensor& ti, int64_t R, int64_t D) {
  TORCH_CHECK(ctab.dim() == 2 && ttab.dim() == 2 && ctab.size(1) == D && ttab.size(1) == D, "tables must be (M, D)");
  TORCH_CHECK(ctab.is_contiguous() && ttab.is_contiguous() && ci.is_contiguous() && ti.is_contiguous(),
              "tables and indices must be contiguous");
  TORCH_CHECK(ci.scalar_type() == torch::kInt64 && ti.scalar_type() == torch::kInt64, "indices must be int64");
  TORCH_CHECK(ci.dim() == 2 && ci.size(0) == R && ti.dim() == 1 && ti.size(0) == R, "indices: (R, N) and (R,)");
}

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor a, torch::Tensor ctab, torch::Tensor ttab, torch::Tensor ci,
                                   torch::Tensor ti) {
  TORCH_CHECK(a.dim() == 2 && a.is_contiguous(), "a must be contiguous (R, D)");
  const int64_t R = a.size(0), D = a.size(1), N = ci.size(1);
  check_common(ctab, ttab, ci, ti, R, D);
  TORCH_CHECK(ctab.scalar_type() == a.scalar_type() && ttab.scalar_type() == a.scalar_type(), "one dtype");
  auto p = torch::empty({R, N + 1}, a.options());
  auto m = torch::empty({R, D}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gather_attention_forward", [&] {
    auto f = D == 65 ? forward_impl<scalar_t, 65> : forward_impl<scalar_t, 0>;
    f(a.data_ptr<scalar_t>(), ctab.data_ptr<scalar_t>(), ttab.data_ptr<scalar_t>(), ci.data_ptr<int64_t>(),
      ti.data_ptr<int64_t>(), p.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), R, N, D, ctab.size(0), ttab.size(0));
  });
  return {p, m};
}

torch::Tensor backward(c10::optional<torch::Tensor> gp, torch::Tensor gm, torch::Tensor p, torch::Tensor ctab,
                       torch::Tensor ttab, torch::Tensor ci, torch::Tensor ti) {
  TORCH_CHECK(gm.dim() == 2 && gm.is_contiguous() && p.is_contiguous(), "gm (R, D) and p (R, L) contiguous");
  const int64_t R = gm.size(0), D = gm.size(1), N = ci.size(1);
  check_common(ctab, ttab, ci, ti, R, D);
  TORCH_CHECK(p.dim() == 2 && p.size(0) == R && p.size(1) == N + 1, "p must be (R, N + 1)");
  if (gp.has_value()) {
    TORCH_CHECK(gp->is_contiguous() && gp->sizes() == p.sizes(), "gp must be contiguous like p");
  }
  auto ga = torch::empty({R, D}, gm.options());
  AT_DISPATCH_FLOATING_TYPES(gm.scalar_type(), "gather_attention_backward", [&] {
    backward_impl<scalar_t>(gp.has_value() ? gp->data_ptr<scalar_t>() : nullptr, gm.data_ptr<scalar_t>(),
                            p.data_ptr<scalar_t>(), ctab.data_ptr<scalar_t>(), ttab.data_ptr<scalar_t>(),
                            ci.data_ptr<int64_t>(), ti.data_ptr<int64_t>(), ga.data_ptr<scalar_t>(), R, N, D);
  });
  return ga;
}
