"""What several methods share that is not a network or a kernel."""

from __future__ import annotations


def category_config(config: dict, dataset: str, category: str) -> dict:
    """The run's config with its category's entry of ``category_overrides`` applied (a profile's
    per-category setting, keyed ``"<dataset>/<category>"``, e.g. real_subset's MVTec grid at
    256 px: a folder dataset named "grid" does not get it); unknown keys are an error, not
    ignored."""
    category = f"{dataset}/{category}"
    over = config.get("category_overrides", {}).get(category, {})
    unknown = set(over) - set(config) | ({"category_overrides"} & set(over))
    if unknown:
        raise ValueError(f"category_overrides[{category!r}] sets unknown keys {sorted(unknown)}")
    return {**config, **over}
