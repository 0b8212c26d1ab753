"""Frames, animations (animated PNG or GIF) and mosaics of CT volumes and difference maps, built
with numpy lookup tables."""
