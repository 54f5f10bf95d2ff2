"""Does TSDN's FNE learn W_gt when W' gets no reconstruction gradient? (issue 11, point 6)

Sec. 2.4 says "The training is optimized to minimize the cross-entropy loss L_FNE"; Eq. 3 sums
every term into one loss. Read jointly (our runs), the gradient of the reconstruction through
F_nm1 = W' x F_1/32 also reaches W', and in the no-skip row t3_C it outweighs lambda_f L_FNE.
This probe runs one TSDN cell of a profile exactly as ``repro run`` would, except that the gate
uses W' detached (:func:`fne_trained_by_its_loss_alone`): W' is then set by lambda_f L_FNE
alone, while the rest of the network trains as before. A diagnostic: the record goes to a
temporary results folder (``--out``), never into ``results/`` or the model cache.

    python -m repro.probe_tsdn_fne --dataset mpdd --category metal_plate --variant model=t3_C
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager

import numpy as np
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)

from .networks import tsdn as net


@contextmanager
def fne_trained_by_its_loss_alone():
    """Within the block, every TSDN with an FNE feeds DCD_N with W'.detach() x F_1/32 instead of
    W' x F_1/32: the same values, but the reconstruction's gradient no longer reaches the FNE,
    while ``out["w"]`` (what L_FNE sees) keeps its graph. Two global module hooks, no copy of
    the network: after an FNE call they keep (F_1/32, W'), and the next decoder call, which in
    ``TSDN.forward`` is DCD_N (DCD_A runs before the FNE), gets the detached product."""
    seen: dict = {}

    def keep(module, inputs, w):
        if isinstance(module, net.FNE):
            seen["f32"], seen["w"] = inputs[0], w

    def detached_gate(module, args):
        if not isinstance(module, net.Decoder) or not seen:
            return None  # DCD_A, or a TSDN without an FNE: left as it is
        f32, w = seen.pop("f32"), seen.pop("w")
        return (w.detach()[:, :, None, None] * f32, *args[1:])

    hooks = [register_module_forward_hook(keep),
             register_module_forward_pre_hook(detached_gate)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def probe(dataset: str, category: str, variant: str = "model=t3_C",
          profile: str = "real_subset", seed: int = 0) -> dict:
    """The run record of one cell computed with :func:`fne_trained_by_its_loss_alone` (into
    whatever ``REPRO_RESULTS`` / ``REPRO_CACHE`` name: the CLI points them at a temp folder)."""
    from .experiments import run_cell

    with fne_trained_by_its_loss_alone():
        return run_cell("tsdn", "main", dataset, category, variant=variant, profile=profile,
                        seed=seed)


def summary(rec: dict) -> str:
    e, m = rec["extra"], rec["metrics"]
    corr = (e.get("fne_test") or {}).get("w_corr") or [float("nan")]
    h = e["history"]
    return (f"image AUROC {100 * m['image_auroc']:.1f}, pixel AUROC {100 * m['pixel_auroc']:.1f}; "
            f"test corr(W', W_gt) mean {np.mean(corr):.3f} median {np.median(corr):.3f}; "
            f"train corr last epoch {h[-1].get('w_corr', float('nan')):.3f}; "
            f"L_FNE {h[0]['f']:.2f} -> {h[-1]['f']:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="real_subset")
    p.add_argument("--dataset", default="mpdd")
    p.add_argument("--category", default="metal_plate")
    p.add_argument("--variant", default="model=t3_C")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results and cache folder (default: a temp dir)")
    a = p.parse_args(argv)
    out = a.out or tempfile.mkdtemp(prefix="probe_tsdn_fne_")
    os.environ["REPRO_RESULTS"] = os.path.join(out, "results")
    os.environ["REPRO_CACHE"] = os.path.join(out, "cache")
    rec = probe(a.dataset, a.category, a.variant, a.profile, a.seed)
    print(f"{a.dataset}/{a.category} {a.variant} seed {a.seed}, W' detached in the gate: "
          f"{summary(rec)} (record under {out})", flush=True)


if __name__ == "__main__":
    main()
