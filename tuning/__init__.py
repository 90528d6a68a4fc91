"""Ray Tune sweeps over world-model sizes (model size, width, depth, codebook, learning rate)."""
