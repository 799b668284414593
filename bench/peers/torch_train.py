"""A sparsify-style PyTorch TopK SAE trainer, the training peer of bench/peers.js:
`python3 torch_train.py D_IN D_SAE K BATCH THREADS STEPS`.

As EleutherAI's sparsify trains (sparsify/sparse_coder.py): pre = relu(x' W_enc^T + b_enc),
top-k, decode by gathering the k decoder rows (the eager decode), FVU loss, autograd backward,
the decoder-gradient projection, Adam, decoder rows renormalized. fp32, CPU, one batch reused
(the data loader is not what is timed). Prints tokens/s over STEPS steps after 2 warm-up steps.
"""
import json
import sys
import time

import torch

d_in, d_sae, k, batch, threads, steps = (int(a) for a in sys.argv[1:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in) / d_in**0.5)
with torch.no_grad():
    W_dec /= W_dec.norm(dim=1, keepdim=True)
W_enc = torch.nn.Parameter(W_dec.detach().clone())  # [d_sae, d_in], as sparsify's encoder.weight
b_enc = torch.nn.Parameter(torch.zeros(d_sae))
b_dec = torch.nn.Parameter(torch.zeros(d_in))
opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=2e-4)
x = torch.randn(batch, d_in)


def step():
    pre = torch.relu(torch.nn.functional.linear(x - b_dec, W_enc, b_enc))
    acts, idx = pre.topk(k, dim=1, sorted=False)
    x_hat = (acts[..., None] * W_dec[idx]).sum(-2) + b_dec
    e = x_hat - x
    fvu = e.pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    opt.zero_grad(set_to_none=True)
    fvu.backward()
    with torch.no_grad():  # remove the gradient's component along each decoder row
        g = W_dec.grad
        g -= (g * W_dec).sum(1, keepdim=True) * W_dec
    opt.step()
    with torch.no_grad():
        W_dec.div_(W_dec.norm(dim=1, keepdim=True))


for _ in range(2):
    step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = time.perf_counter() - t0
print(json.dumps({"tokens_per_second": batch * steps / dt}))
