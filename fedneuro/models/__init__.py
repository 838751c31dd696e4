"""Model layer: backbone presets, local pretrained weights, peft adapters, the exchanged tensors."""
