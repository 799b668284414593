"""PyTorch reference timings for the GPU check, same shapes as saekit_gpu_check's timing row.

Encode: x @ W_enc + b_enc -> relu -> topk (cuBLAS matmul, dense [N, d_sae] materialized);
decode: embedding_bag(indices, W_dec, per_sample_weights=values, mode='sum') + b_dec.
Appends a markdown table to the report given as argv[1] (default: stdout only).
Run on the lent GPU machine (PyTorch is there), in the same command as saekit_gpu_check.
"""
import sys
import time

import torch


def timed(fn, reps=5):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main():
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 2
    dev = torch.device("cuda")
    n, d_in, d_sae, k = 4096, 768, 24576, 32
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(n, d_in, device=dev, generator=g)
    w_enc = torch.randn(d_in, d_sae, device=dev, generator=g) / d_in**0.5
    b_enc = torch.zeros(d_sae, device=dev)
    w_dec = torch.randn(d_sae, d_in, device=dev, generator=g) / d_in**0.5
    b_dec = torch.zeros(d_in, device=dev)

    def encode(dtype):
        xx, ww = x.to(dtype), w_enc.to(dtype)
        return lambda: torch.topk(torch.relu(xx @ ww + b_enc.to(dtype)), k, dim=1)

    t32 = timed(encode(torch.float32))
    t16 = timed(encode(torch.bfloat16))
    vals, idx = torch.topk(torch.relu(x @ w_enc + b_enc), k, dim=1)
    offsets = torch.arange(0, n * k, k, device=dev)
    flat_idx, flat_val = idx.reshape(-1), vals.reshape(-1)
    td = timed(lambda: torch.nn.functional.embedding_bag(flat_idx, w_dec, offsets, mode="sum", per_sample_weights=flat_val) + b_dec)
    flop = 2.0 * n * d_in * d_sae
    dec_bytes = n * k * d_in * 4 + n * d_in * 4
    rows = [
        "",
        f"## PyTorch {torch.__version__} reference ({torch.cuda.get_device_name(0)}), same shape",
        "| measure | value |",
        "|---|---|",
        f"| encode fp32 (matmul + relu + topk) | {n / t32:.0f} tokens/s, {flop / t32 / 1e12:.2f} TFLOP/s |",
        f"| encode bf16 (matmul + relu + topk) | {n / t16:.0f} tokens/s, {flop / t16 / 1e12:.2f} TFLOP/s |",
        f"| decode embedding_bag | {dec_bytes / td / 1e9:.1f} GB/s |",
    ]
    text = "\n".join(rows) + "\n"
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
