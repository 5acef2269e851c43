"""Adam steps: PyTorch's default implementation against the fused kernels `build_optimizer` now takes.

On a CPU, torch.optim.Adam's default is neither fused nor for-each: a Python loop over the parameters, a few small
kernels each (the single-tensor path), which is what "default" times here.

    python benchmarks/optimizer_step.py            # the fingerprint MLP head, and the tiny preset's encoder + head

For each model the same parameters and gradients are stepped N times by each implementation, alternating, in one
process; prints milliseconds per step and the ratio, checks that both give the same weights to float32 rounding, and
writes benchmarks/results/optimizer_step.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from machine_info import describe_machine

HERE = Path(__file__).resolve().parent


def _models() -> dict:
    from moleclip import MoleCLIPConfig, MoleCLIPForPropertyPrediction
    from moleclip.training.kinds.baselines import FingerprintPredictor

    torch.manual_seed(0)
    head = FingerprintPredictor(2048, 1, "regression")
    tiny = MoleCLIPForPropertyPrediction(MoleCLIPConfig.from_preset("tiny", num_targets=1))
    return {"fingerprint MLP (2048-512-512-512-1)": head, "tiny preset, encoder + head": tiny}


def _time(model, fused: bool, steps: int) -> tuple[float, list[torch.Tensor]]:
    from moleclip.training.loop import build_optimizer

    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=generator) * 1e-3 for p in params]
    optimizer = build_optimizer([{"params": params, "lr": 1e-3, "weight_decay": 1e-5}], fused=fused)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()  # first step allocates the moments
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000, [p.detach() for p in params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per implementation")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "optimizer_step.json",
                        help="where to write (a quick --steps check should not replace the recorded figures)")
    args = parser.parse_args()
    results = {"benchmark": "optimizer_step", "machine": describe_machine(), "threads": torch.get_num_threads(),
               "models": {}}
    for name, model in _models().items():
        times = {"default": [], "fused": []}
        for _ in range(args.repeats):
            for kind in ("default", "fused"):
                ms, weights = _time(model, kind == "fused", args.steps)
                times[kind].append(ms)
                if kind == "default":
                    reference = weights
                else:
                    gap = max(float((a - b).abs().max()) for a, b in zip(reference, weights))
        best = {kind: min(values) for kind, values in times.items()}
        n = sum(p.numel() for p in model.parameters())
        results["models"][name] = {"parameters": n, "default_ms": round(best["default"], 3),
                                   "fused_ms": round(best["fused"], 3),
                                   "ratio": round(best["default"] / best["fused"], 2), "max_weight_difference": gap}
        print(f"{name}: {n:,} parameters; default {best['default']:.3f} ms/step, fused {best['fused']:.3f} ms/step "
              f"(x{best['default'] / best['fused']:.2f}); largest weight difference after {args.steps + 1} steps "
              f"{gap:.2e}")
    out = args.output
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
