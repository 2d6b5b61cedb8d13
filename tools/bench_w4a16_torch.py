#!/usr/bin/env python3
"""PyTorch's own int4 kernel (torch.ops.aten._weight_int4pack_mm, group 128, bf16 activations) at the shapes of
`diffulex bench --device cuda --w4a16-kernels`, for the comparison table in docs/PERFORMANCE.md. Run on the GPU
machine in the same call as the diffulex bench:

    python3 tools/bench_w4a16_torch.py --output $OUT/torch_int4.json

Times are CUDA-event medians over --iters calls after --warmup, the weights rotated among copies that together exceed
the L2 cache (as the diffulex bench does). Random codes, scales and zeros; the numbers do not depend on the values.
"""
import argparse
import json
import statistics

import torch

SHAPES = [("dream.qkv", 4608, 3584), ("dream.o", 3584, 3584), ("dream.gate_up", 37888, 3584),
          ("dream.down", 3584, 18944), ("llada.qkv", 12288, 4096), ("llada.gate_up", 24576, 4096),
          ("llada.down", 4096, 12288)]


def pack(n, k, gs, dev):
    q = torch.randint(0, 16, (n, k), dtype=torch.int32, device=dev)
    try:  # torch >= 2.5 takes uint8 [N, K/2] (two codes a byte, high nibble first)
        u8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)
        w = torch.ops.aten._convert_weight_to_int4pack(u8, 8)
    except Exception:
        w = torch.ops.aten._convert_weight_to_int4pack(q, 8)
    sz = torch.empty(k // gs, n, 2, dtype=torch.bfloat16, device=dev)
    sz[..., 0].uniform_(0.005, 0.015)
    sz[..., 1].uniform_(-0.1, 0.1)
    return w, sz


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--output", default="torch_int4.json")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ms", default="1,16,32,64,128,256,512,1024")
    a = ap.parse_args()
    dev = torch.device("cuda")
    gs = 128
    rows = []
    for name, n, k in SHAPES:
        w0, sz0 = pack(n, k, gs, dev)
        nbytes = w0.numel() * w0.element_size() + sz0.numel() * 2
        copies = [(w0, sz0)]
        while len(copies) < 16 and len(copies) * nbytes < (160 << 20):
            copies.append(pack(n, k, gs, dev))
        for m in [int(v) for v in a.ms.split(",")]:
            x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
            row = {"shape": name, "N": n, "K": k, "M": m}
            try:
                for i in range(a.warmup):
                    w, sz = copies[i % len(copies)]
                    torch.ops.aten._weight_int4pack_mm(x, w, gs, sz)
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(a.iters + 1)]
                ev[0].record()
                for i in range(a.iters):
                    w, sz = copies[i % len(copies)]
                    torch.ops.aten._weight_int4pack_mm(x, w, gs, sz)
                    ev[i + 1].record()
                torch.cuda.synchronize()
                row["ms_torch_int4"] = statistics.median(ev[i].elapsed_time(ev[i + 1]) for i in range(a.iters))
            except Exception as e:  # report, do not hide
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            rows.append(row)
            print(f"{name:<15} M={m:<5} torch int4 {row.get('ms_torch_int4', float('nan')):.4f} ms", flush=True)
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "group_size": gs, "rows": rows}
    with open(a.output, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
