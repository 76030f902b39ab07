"""The second domain: style LoRAs for a small text-to-image model, conditioned on style images."""
