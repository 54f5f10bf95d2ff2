"""Networks, one module per paper (each ablation is a named configuration of one module)."""
