"""Training on the GPU (issue 20): saekit's CUDA trainer against the sparsify-style PyTorch trainer
at the GPT-2-small shape, appended to the GPU report. Standard library only (no torch import).

    python3 bench/gpu/train_compare.py REPORT [LABEL=OUTPUT ...]

REPORT is the report saekit_gpu_check wrote; its "## training (CUDA trainer, topk)" section has
the line "- step at d_in 768, d_sae 24576, k 32, batch 4096 (...): X ms, Y tokens/s ...", which
gives saekit's step time. Each OUTPUT is a file holding what one `bench/peers/torch_train.py
... --device cuda` run wrote (stdout and stderr together): its last JSON line gives the PyTorch
figures; with none, its last line says why. A missing number is said in the report, not fatal.
Exit status 0 unless REPORT cannot be read or written.
"""
import json
import re
import sys

BATCH = 4096
TARGET = 2.0
STEP_LINE = re.compile(r"^- step at d_in 768, d_sae 24576, k 32, batch 4096\b.*?:\s*([0-9.]+) ms", re.M)


def saekit_ms(report_text):
    m = STEP_LINE.search(report_text)
    return float(m.group(1)) if m else None


def torch_result(path):
    """(dict, None) from the last JSON line of PATH, or (None, reason)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError as e:
        return None, f"no output ({e.strerror})"
    for l in reversed(lines):
        if l.startswith("{"):
            try:
                r = json.loads(l)
            except ValueError:
                continue
            if isinstance(r, dict) and r.get("tokens_per_second"):
                return r, None
    return None, (lines[-1][:300] if lines else "no output")


def section(report_text, runs):
    ms = saekit_ms(report_text)
    ours = BATCH / (ms * 1e-3) if ms else None
    out = ["", "## training: saekit CUDA trainer vs sparsify-style PyTorch trainer (same card, same run)", ""]
    out.append("d_in 768, d_sae 24576, k 32, batch 4096, topk, no dead latents (no AuxK), Adam. saekit's step uploads the batch from the host each step")
    out.append("(bench/peers/torch_train.py keeps its one batch on the card); saekit's encoder is the exact fp32 top-k.")
    out.append("")
    out.append("| trainer | ms/step | tokens/s | saekit speed-up |")
    out.append("|---|---|---|---|")
    if ours:
        out.append(f"| saekit CUDA trainer (saekit_gpu_check's step line) | {ms:.2f} | {ours:.0f} | |")
    else:
        out.append("| saekit CUDA trainer | missing: no step line in the report (did saekit_gpu_check's training timing run?) | | |")
    best = None
    for label, path in runs:
        r, why = torch_result(path)
        if r is None:
            out.append(f"| PyTorch {label} | failed: {why.replace('|', '/')} | | |")
            continue
        tok = float(r["tokens_per_second"])
        step_ms = float(r.get("ms_per_step") or BATCH / tok * 1e3)
        ratio = f"{ours / tok:.2f}x" if ours else "(no saekit figure)"
        extra = f", torch {r['torch']}" if r.get("torch") else ""
        out.append(f"| PyTorch {label} ({r.get('steps', '?')} steps after {r.get('warmup', '?')} warm-up{extra}) | {step_ms:.2f} | {tok:.0f} | {ratio} |")
        if best is None or tok > best[1]:
            best = (label, tok)
    out.append("")
    if ours and best:
        ratio = ours / best[1]
        verdict = "met" if ratio >= TARGET else "NOT met"
        out.append(f"saekit / fastest PyTorch trainer ({best[0]}): {ratio:.2f}x (target >= {TARGET:g}x: {verdict})")
    elif not ours:
        out.append("saekit / PyTorch: not computed (saekit's step time is missing)")
    else:
        out.append("saekit / PyTorch: not computed (no PyTorch trainer figure)")
    return "\n".join(out) + "\n"


def main(argv):
    if not argv:
        print("usage: python3 bench/gpu/train_compare.py REPORT [LABEL=OUTPUT ...]", file=sys.stderr)
        return 2
    report = argv[0]
    runs = []
    for a in argv[1:]:
        label, sep, path = a.partition("=")
        if not sep:
            print(f"train_compare.py: expected LABEL=OUTPUT, got {a!r}", file=sys.stderr)
            return 2
        runs.append((label, path))
    with open(report, encoding="utf-8") as f:
        text = f.read()
    sec = section(text, runs)
    print(sec, end="")
    with open(report, "a", encoding="utf-8") as f:
        f.write(sec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
