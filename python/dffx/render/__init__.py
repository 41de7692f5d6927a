"""Rendering helpers built on the rasterizer (depth maps now; textured rendering comes with synthesis)."""

from .depth import depth_to_image, frame_camera, render_depth

__all__ = ["depth_to_image", "frame_camera", "render_depth"]
