// The compiled module of icl_kinetics/simulate/kernels.py: the functions of
// gather_attention.cpp and mlp_step.cpp, one extension built once per machine.
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> forward(torch::Tensor a, torch::Tensor ctab, torch::Tensor ttab, torch::Tensor ci,
                                   torch::Tensor ti);
torch::Tensor backward(c10::optional<torch::Tensor> gp, torch::Tensor gm, torch::Tensor p, torch::Tensor ctab,
                       torch::Tensor ttab, torch::Tensor ci, torch::Tensor ti);
void mlp_bias_relu_(at::Tensor h, at::Tensor b);
at::Tensor mlp_readout_forward_(at::Tensor h, at::Tensor b, at::Tensor w3, at::Tensor b3);
std::vector<at::Tensor> mlp_readout_backward(at::Tensor g, at::Tensor h, at::Tensor w3);
at::Tensor mlp_relu_backward_(at::Tensor gh, at::Tensor h);

// Every function releases the GIL while it runs (it touches no Python object), so the
// engine's worker threads run their kernels at the same time, as they do torch's own ops.
// benchmarks/bench_gil.py builds the variant that holds it (ICL_KINETICS_HOLD_GIL) to compare.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef ICL_KINETICS_HOLD_GIL
  using release = pybind11::call_guard<>;
#else
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
#endif
  m.def("forward", &forward, "fused gather-attention, forward", release());
  m.def("backward", &backward, "fused gather-attention, backward (gradient of a)", release());
  m.def("mlp_bias_relu_", &mlp_bias_relu_, "h = relu(h + b) in place", release());
  m.def("mlp_readout_forward_", &mlp_readout_forward_, "h = relu(h + b) in place; returns h . w3 + b3",
        release());
  m.def("mlp_readout_backward", &mlp_readout_backward, "(ga, gw3, gb) of the readout and its ReLU", release());
  m.def("mlp_relu_backward_", &mlp_relu_backward_, "gh = [h > 0] gh in place; returns its row sums", release());
}
