"""The PyTorch peer of bench/peers.js: `python3 torch_encode.py DIR acts.npy K THREADS DTYPE`.

relu(addmm(b_enc, x - b_dec, W_enc)).topk(K) over 4096-row chunks, DTYPE float32 or bfloat16
(bf16 rounds inputs, weights and products: inexact), then CSR codes as saekit writes them.
Prints the first 64 rows' latent sets as JSON for the overlap check. Needs torch and numpy
(see bench/peers/README.md for installing them from this machine image's wheel set).
"""
import json
import sys

import numpy as np
import torch

d, inp, k, threads, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
W = torch.from_numpy(np.load(f"{d}/W_enc.npy")).to(dt)
b_enc = torch.from_numpy(np.load(f"{d}/b_enc.npy")).to(dt)
b_dec = torch.from_numpy(np.load(f"{d}/b_dec.npy")).to(dt)
x = np.load(inp, mmap_mode="r")
rows = x.shape[0]
first = []
nnz = 0
with torch.inference_mode():
    for r0 in range(0, rows, 4096):
        xc = torch.from_numpy(np.ascontiguousarray(x[r0 : r0 + 4096])).to(dt) - b_dec
        pre = torch.relu(torch.addmm(b_enc, xc, W))
        vals, idx = pre.topk(k, dim=1)
        vals = vals.float()
        keep = vals > 0
        # CSR: latents ascending per row, zeros dropped.
        idx = torch.where(keep, idx, torch.full_like(idx, pre.shape[1]))
        order = idx.sort(dim=1)
        counts = keep.sum(dim=1)
        nnz += int(counts.sum())
        for r in range(min(64 - len(first), idx.shape[0])):
            first.append(order.values[r, : int(counts[r])].tolist())
print(json.dumps({"rows": rows, "nnz": nnz, "firstRows": first}))
