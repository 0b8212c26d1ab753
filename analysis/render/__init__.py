"""Frames, GIFs and mosaics of CT volumes and difference maps, built with numpy lookup tables."""
