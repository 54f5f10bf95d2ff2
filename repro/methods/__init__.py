"""Training and prediction per method: return per-image scores and per-pixel maps; nothing here
knows about notebooks."""
