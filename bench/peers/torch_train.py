"""A sparsify-style PyTorch TopK SAE trainer, the training peer of bench/peers.js (CPU) and of
bench/gpu/run.sh (CUDA):

    python3 torch_train.py D_IN D_SAE K BATCH THREADS STEPS [--device cpu|cuda] [--warmup N]
                           [--impl eager|fused] [--autocast-bf16]

As EleutherAI's sparsify trains (sparsify/sparse_coder.py): pre = relu(x' W_enc^T + b_enc),
top-k, decode, FVU loss, autograd backward, the decoder-gradient projection, Adam, decoder rows
renormalized. One batch reused, resident on the device (the data loader is not what is timed);
no AuxK (no dead latents). Two implementations of the encoder and decoder:
  - eager (the default, and what bench/peers.js times on the CPU): torch's own autograd through
    linear/relu/topk (a dense [BATCH, D_SAE] gradient and two dense matmuls in the backward), the
    decode by gathering the k decoder rows;
  - fused: what sparsify runs on a GPU: its FusedEncoder (sparsify/fused_encoder.py: the dense
    forward, a sparse backward by embedding_bag and index_add_) and the embedding_bag decode
    (sparsify's eager_decode; it uses an xformers Triton embedding_bag when Triton is present).
    torch.compile, which sparsify wraps FusedEncoder's methods in, is not applied here.
--autocast-bf16 wraps the forward in torch.autocast(bfloat16), as sparsify's SparseCoder.forward
does on CUDA (the matmuls in bf16; the exact fp32 path is the default).

Runs --warmup steps (default 2), then times STEPS steps (on CUDA between torch.cuda.synchronize()
calls). Prints ONE line of JSON on stdout: tokens_per_second (what bench/peers.js reads),
ms_per_step, and the settings. --device cuda without a usable CUDA device: a one-line message on
stderr, exit status 2.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


class FusedEncoder(torch.autograd.Function):
    """sparsify/fused_encoder.py's FusedEncoder (topk activation), without torch.compile."""

    @staticmethod
    def forward(ctx, input, weight, bias, k):
        preacts = F.relu(F.linear(input, weight, bias))
        values, indices = torch.topk(preacts, k, dim=-1, sorted=False)
        ctx.save_for_backward(input, weight, bias, indices)
        return values, indices, preacts

    @staticmethod
    def backward(ctx, grad_values, grad_indices, grad_preacts):
        input, weight, bias, indices = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = F.embedding_bag(indices, weight, mode="sum", per_sample_weights=grad_values.type_as(weight))
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight)
            contributions = grad_values.unsqueeze(2) * input.unsqueeze(1)
            grad_weight.index_add_(0, indices.flatten(), contributions.reshape(-1, input.shape[-1]).type_as(weight))
        if ctx.needs_input_grad[2]:
            grad_bias = torch.zeros_like(bias)
            grad_bias.index_add_(0, indices.flatten(), grad_values.flatten().type_as(bias))
        return grad_input, grad_weight, grad_bias, None


def parse_args(argv):
    p = argparse.ArgumentParser(description="sparsify-style PyTorch TopK SAE trainer timing")
    for name in ("d_in", "d_sae", "k", "batch", "threads", "steps"):
        p.add_argument(name, type=int)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--impl", choices=("eager", "fused"), default="eager")
    p.add_argument("--autocast-bf16", action="store_true")
    return p.parse_args(argv)


def make_trainer(d_in, d_sae, k, batch, device, impl="eager", autocast_bf16=False, seed=0):
    """Returns (step, params): step() runs one optimizer step on the one batch and returns the FVU."""
    torch.manual_seed(seed)
    W_dec = torch.randn(d_sae, d_in) / d_in**0.5
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(W_dec.to(device))
    W_enc = torch.nn.Parameter(W_dec.detach().clone())  # [d_sae, d_in], as sparsify's encoder.weight
    b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
    b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=2e-4)
    x = torch.randn(batch, d_in).to(device)

    def forward():
        if impl == "eager":
            pre = torch.relu(F.linear(x - b_dec, W_enc, b_enc))
            acts, idx = pre.topk(k, dim=1, sorted=False)
            x_hat = (acts[..., None] * W_dec[idx]).sum(-2) + b_dec
        else:
            acts, idx, _ = FusedEncoder.apply(x - b_dec, W_enc, b_enc, k)
            x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=acts.to(W_dec.dtype), mode="sum") + b_dec
        e = x_hat - x
        return e.pow(2).sum() / (x - x.mean(0)).pow(2).sum()

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast_bf16):
            fvu = forward()
        opt.zero_grad(set_to_none=True)
        fvu.backward()
        with torch.no_grad():  # remove the gradient's component along each decoder row
            g = W_dec.grad
            g -= (g * W_dec).sum(1, keepdim=True) * W_dec
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
        return fvu

    return step, params


def main(argv):
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"torch_train.py: --device cuda requested but torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no usable CUDA device", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    step, _ = make_trainer(a.d_in, a.d_sae, a.k, a.batch, a.device, a.impl, a.autocast_bf16)
    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        fvu = step()
    sync()
    dt = time.perf_counter() - t0
    out = {
        "tokens_per_second": a.batch * a.steps / dt,
        "ms_per_step": 1e3 * dt / a.steps,
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
        "impl": a.impl,
        "dtype": "autocast-bf16" if a.autocast_bf16 else "fp32",
        "shape": [a.d_in, a.d_sae, a.k, a.batch],
        "warmup": a.warmup,
        "steps": a.steps,
        "fvu": fvu.item(),
        "torch": torch.__version__,
    }
    if a.device == "cuda":
        out["peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
