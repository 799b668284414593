"""PyTorch reference timings for the GPU check, at the same shapes as saekit_gpu_check's table.

Encode: x @ W_enc + b_enc -> relu -> topk (cuBLAS matmul, the dense [rows, d_sae] block
materialized), in fp32 (the exact reference: TF32 off, torch's default for matmul) and in bf16,
over all rows in blocks of 8192 so the dense block fits the card. Decode: embedding_bag over
the top-k codes + b_dec. When saekit_gpu_check wrote REPORT.json (its timings), the table gets
the ratio torch time / saekit time. Appends a markdown table to REPORT (argv[1]); stdout only
without it. Run on the lent GPU machine in the same command as saekit_gpu_check.
"""
import json
import os
import sys
import time

import torch

SHAPES = [(65536, 768, 24576, 32), (65536, 4096, 131072, 64)]
BLOCK = 8192


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def measure(n, d_in, d_sae, k):
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(n, d_in, device=dev, generator=g)
    w_enc = torch.randn(d_in, d_sae, device=dev, generator=g) / d_in**0.5
    b_enc = torch.randn(d_sae, device=dev, generator=g) * 0.05
    w_dec = torch.randn(d_sae, d_in, device=dev, generator=g) / d_in**0.5
    b_dec = torch.randn(d_in, device=dev, generator=g) * 0.1

    def encode(dtype):
        xx, ww, bb = x.to(dtype), w_enc.to(dtype), b_enc.to(dtype)

        def run():
            for r0 in range(0, n, BLOCK):
                torch.topk(torch.relu(xx[r0 : r0 + BLOCK] @ ww + bb), k, dim=1)

        return run

    t32 = timed(encode(torch.float32))
    t16 = timed(encode(torch.bfloat16))
    vals, idx = torch.topk(torch.relu(x[:BLOCK] @ w_enc + b_enc), k, dim=1)
    offsets = torch.arange(0, BLOCK * k, k, device=dev)
    flat_idx, flat_val = idx.reshape(-1), vals.reshape(-1)
    td = timed(lambda: torch.nn.functional.embedding_bag(flat_idx, w_dec, offsets, mode="sum", per_sample_weights=flat_val) + b_dec) * n / BLOCK
    del x, w_enc, w_dec
    torch.cuda.empty_cache()
    return t32, t16, td


def main():
    if not torch.cuda.is_available():
        print("torch: no CUDA device")
        return 2
    ours = {}
    if len(sys.argv) > 1 and os.path.exists(sys.argv[1] + ".json"):
        with open(sys.argv[1] + ".json") as f:
            for r in json.load(f):
                ours[(r["d_in"], r["d_sae"], r["k"])] = r
    rows = [
        "",
        f"## PyTorch {torch.__version__} reference ({torch.cuda.get_device_name(0)}), same run, same shapes",
        "",
        "| shape (d_in / d_sae / k, rows) | torch fp32 encode | torch bf16 encode | saekit speed-up vs fp32 / bf16 | torch decode (embedding_bag) | saekit decode speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for n, d_in, d_sae, k in SHAPES:
        try:
            t32, t16, td = measure(n, d_in, d_sae, k)
        except RuntimeError as e:  # e.g. out of memory
            rows.append(f"| {d_in} / {d_sae} / {k}, {n} | failed: {e} | | | | |")
            continue
        flop = 2.0 * n * d_in * d_sae
        o = ours.get((d_in, d_sae, k))
        enc_ratio = f"{t32 / (o['encode_ms'] * 1e-3):.2f}x / {t16 / (o['encode_ms'] * 1e-3):.2f}x" if o else "(no saekit timings)"
        dec_ratio = f"{td / (o['decode_ms'] * 1e-3):.2f}x" if o else ""
        rows.append(
            f"| {d_in} / {d_sae} / {k}, {n} | {n / t32:.0f} tok/s, {flop / t32 / 1e12:.1f} TFLOP/s | "
            f"{n / t16:.0f} tok/s, {flop / t16 / 1e12:.1f} TFLOP/s | {enc_ratio} | {n / td:.0f} tok/s | {dec_ratio} |"
        )
    text = "\n".join(rows) + "\n"
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
