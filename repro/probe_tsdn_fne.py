"""Does TSDN's FNE learn W_gt when W' gets no reconstruction gradient? (issue 11, point 6)

Sec. 2.4 says the FNE "is optimized to minimize the cross-entropy loss L_FNE", while Eq. 3 sums
every term into one loss. Read jointly (our runs), the gradient of the reconstruction through
F_nm1 = W' x F_1/32 also reaches W', and in the no-skip row t3_C it outweighs lambda_f L_FNE.
This probe runs one TSDN cell of a profile exactly as ``repro run`` would, except that the gate
uses W' detached (``detach_gate``): W' is then set by lambda_f L_FNE alone, while the rest of
the network trains as before. A diagnostic: the record goes to a temporary results folder
(``--out``), never into ``results/`` or the model cache.

    python -m repro.probe_tsdn_fne --dataset mpdd --category metal_plate --variant model=t3_C
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager

import numpy as np
import torch

from .networks import tsdn as net


def forward_with_detached_gate(self: net.TSDN, x: torch.Tensor, with_mask: bool | None = None
                               ) -> dict[str, torch.Tensor]:
    """:meth:`repro.networks.tsdn.TSDN.forward` with one change, marked: the gate multiplies
    F_1/32 by W'.detach(), so the reconstruction's gradient does not reach the FNE, while
    ``out["w"]`` (what L_FNE sees) keeps its graph. A copy rather than a flag of the network:
    any edit of ``repro/networks/tsdn.py`` makes every TSDN record stale, so the copy lives here
    until the reading becomes a named setting there (the test pins the two as equal)."""
    if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
        raise ValueError(f"this TSDN was built for {self.image_size}x{self.image_size} "
                         f"inputs, got {tuple(x.shape[-2:])}")
    if with_mask and not self.two_stream:
        raise ValueError("a one-stream TSDN has no DCD_A and predicts no mask")
    want_mask = self.two_stream and (self.training if with_mask is None else with_mask)
    enc = self.encoder(x)
    f32 = self.reduce(enc[-1])
    out = {"f32": f32}
    if want_mask or self.gate == "mask":
        mask = self.dcd_a(f32, enc)
        if want_mask:
            out["mask"] = mask
    if self.gate == "fne":
        w = self.fne(f32)
        f_nm1 = w.detach()[:, :, None, None] * f32  # the change: W' gates without gradient
        if want_mask:
            out["w"] = w
    elif self.gate == "mask":
        f_nm1 = net.suppress(f32, mask)
    else:
        f_nm1 = f32
    out["reconstruction"] = self.dcd_n(f_nm1, enc)
    return out


@contextmanager
def fne_trained_by_its_loss_alone():
    """Within the block, every TSDN runs :func:`forward_with_detached_gate`."""
    original = net.TSDN.forward
    net.TSDN.forward = forward_with_detached_gate
    try:
        yield
    finally:
        net.TSDN.forward = original


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
