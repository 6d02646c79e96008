"""Draw the AlignSeries icon: two stacks of image slices and an arrow aligning one onto the other.

Writes a 128x128 RGBA PNG to ``AlignSeries.png`` (extension icon) and
``AlignSeries/Resources/Icons/AlignSeries.png`` (module icon). Only numpy and VTK are needed:
shapes are rasterized at 4x resolution with exact coverage tests and box-filtered down, which
anti-aliases every edge.

Usage: ``python Utilities/draw_icon.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

SIZE = 128
SUPERSAMPLE = 4
ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = (ROOT / "AlignSeries.png", ROOT / "AlignSeries" / "Resources" / "Icons" / "AlignSeries.png")

BLUE = ((0.55, 0.76, 0.96), (0.13, 0.40, 0.75))  # light top, deep bottom
ORANGE = ((1.00, 0.80, 0.45), (0.93, 0.45, 0.10))
OUTLINE_BLUE = (0.06, 0.22, 0.45)
OUTLINE_ORANGE = (0.55, 0.22, 0.02)
ARROW = (0.20, 0.22, 0.26)


class Canvas:
    """A straight-alpha RGBA float image drawn on in icon coordinates (0..SIZE, y down)."""

    def __init__(self, size: int = SIZE, supersample: int = SUPERSAMPLE):
        self.scale = supersample
        n = size * supersample
        self.rgba = np.zeros((n, n, 4))
        centers = (np.arange(n) + 0.5) / supersample
        self.x, self.y = np.meshgrid(centers, centers)

    def paint(self, coverage: np.ndarray, color, alpha: float = 1.0) -> None:
        """Composite ``color`` over the image where ``coverage`` (0..1) is set ("over" operator)."""
        source_alpha = np.clip(coverage, 0, 1) * alpha
        destination_alpha = self.rgba[..., 3]
        out_alpha = source_alpha + destination_alpha * (1 - source_alpha)
        safe = np.where(out_alpha > 0, out_alpha, 1)
        color = np.broadcast_to(np.asarray(color, dtype=float), self.rgba.shape[:2] + (3,))
        premultiplied = (color * source_alpha[..., None]
                         + self.rgba[..., :3] * (destination_alpha * (1 - source_alpha))[..., None])
        self.rgba[..., :3] = premultiplied / safe[..., None]
        self.rgba[..., 3] = out_alpha

    def downsampled(self) -> np.ndarray:
        """Box-filter to the final size (averaging premultiplied colour), as uint8 RGBA."""
        s = self.scale
        n = self.rgba.shape[0] // s
        premultiplied = np.concatenate([self.rgba[..., :3] * self.rgba[..., 3:], self.rgba[..., 3:]], axis=-1)
        blocks = premultiplied.reshape(n, s, n, s, 4).mean(axis=(1, 3))
        alpha = blocks[..., 3:]
        rgb = np.where(alpha > 0, blocks[..., :3] / np.where(alpha > 0, alpha, 1), 0)
        return np.round(np.concatenate([rgb, alpha], axis=-1) * 255).clip(0, 255).astype(np.uint8)


def polygon(canvas: Canvas, corners) -> np.ndarray:
    """Coverage mask of a convex polygon (corners in either winding order)."""
    corners = np.asarray(corners, dtype=float)
    inside = np.ones(canvas.x.shape, dtype=bool)
    sign = np.sign(_signed_area(corners))
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0), strict=True):
        cross = (x1 - x0) * (canvas.y - y0) - (y1 - y0) * (canvas.x - x0)
        inside &= sign * cross >= 0
    return inside.astype(float)


def stroke(canvas: Canvas, points, width: float, closed: bool = False) -> np.ndarray:
    """Coverage mask of a polyline of the given width with round joins and caps."""
    points = np.asarray(points, dtype=float)
    if closed:
        points = np.vstack([points, points[:1]])
    distance = np.full(canvas.x.shape, np.inf)
    for p0, p1 in zip(points[:-1], points[1:], strict=True):
        distance = np.minimum(distance, _distance_to_segment(canvas.x, canvas.y, p0, p1))
    return (distance <= width / 2).astype(float)


def _distance_to_segment(x, y, p0, p1):
    direction = p1 - p0
    length2 = float(direction @ direction) or 1.0
    t = np.clip(((x - p0[0]) * direction[0] + (y - p0[1]) * direction[1]) / length2, 0, 1)
    return np.hypot(x - (p0[0] + t * direction[0]), y - (p0[1] + t * direction[1]))


def _signed_area(corners) -> float:
    x, y = corners[:, 0], corners[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def slice_corners(center, half_width, half_depth, skew, angle_degrees=0.0):
    """A slice seen in perspective: a parallelogram around ``center``, optionally rotated."""
    corners = np.array([[-half_width - skew, half_depth], [half_width - skew, half_depth],
                        [half_width + skew, -half_depth], [-half_width + skew, -half_depth]])
    angle = np.radians(angle_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return corners @ rotation.T + np.asarray(center, dtype=float)


def slice_ellipse(canvas, center, half_width, half_depth, skew, angle, radii) -> np.ndarray:
    """Coverage of an ellipse drawn on a slice: radii are fractions of the slice's half extents."""
    axes = np.column_stack([[half_width, 0.0], [skew, -half_depth]])
    to_canvas = _rotation(angle) @ axes
    to_slice = np.linalg.inv(to_canvas)
    dx, dy = canvas.x - center[0], canvas.y - center[1]
    s = to_slice[0, 0] * dx + to_slice[0, 1] * dy
    t = to_slice[1, 0] * dx + to_slice[1, 1] * dy
    return ((s / radii[0]) ** 2 + (t / radii[1]) ** 2 <= 1).astype(float)


def draw_anatomy(canvas, center, outline, **slice_shape):
    """A body cross-section on the top slice: a pale ellipse with a rim and a small 'spine'."""
    body = slice_ellipse(canvas, center, radii=(0.62, 0.66), **slice_shape)
    inner = slice_ellipse(canvas, center, radii=(0.55, 0.52), **slice_shape)
    spine = slice_ellipse(canvas, center, radii=(0.12, 0.16), **slice_shape)
    canvas.paint(body, (1, 1, 1), alpha=0.35)
    canvas.paint(body - inner, (1, 1, 1), alpha=0.6)
    canvas.paint(spine, outline, alpha=0.55)


def draw_stack(canvas, centers, colors, outline, *, half_width, half_depth, skew, angle=0.0):
    """Draw slices from the bottom one up; each gets a soft shadow, a fill, a rim and a highlight."""
    light, deep = np.array(colors[0]), np.array(colors[1])
    for index, center in enumerate(centers):
        t = index / max(len(centers) - 1, 1)
        corners = slice_corners(center, half_width, half_depth, skew, angle)
        shadow = slice_corners(np.add(center, (1.2, 1.8)), half_width, half_depth, skew, angle)
        canvas.paint(polygon(canvas, shadow), (0, 0, 0), alpha=0.18)
        canvas.paint(polygon(canvas, corners), deep + (light - deep) * t, alpha=0.97)
        canvas.paint(stroke(canvas, corners, 1.6, closed=True), outline, alpha=0.95)
        top_edge = corners[[3, 2]] + np.array([0.0, 1.4]) @ _rotation(angle).T
        canvas.paint(stroke(canvas, top_edge, 0.9), (1, 1, 1), alpha=0.35 + 0.3 * t)
    draw_anatomy(canvas, centers[-1], outline, half_width=half_width, half_depth=half_depth, skew=skew, angle=angle)


def _rotation(angle_degrees):
    angle = np.radians(angle_degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def draw_arrow(canvas, start, control, end, *, width=5.0, head_length=13.0, head_width=14.0):
    """A curved arrow (quadratic Bezier shaft and a triangular head), with a light halo."""
    start, control, end = (np.asarray(p, dtype=float) for p in (start, control, end))
    t = np.linspace(0, 1, 40)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    tangent = end - control
    tangent /= np.linalg.norm(tangent)
    normal = np.array([-tangent[1], tangent[0]])
    base = end - tangent * head_length
    shaft = curve[np.linalg.norm(curve - end, axis=1) > head_length * 0.8]
    head = [end, base + normal * head_width / 2, base - normal * head_width / 2]
    halo = np.maximum(stroke(canvas, shaft, width + 4), stroke(canvas, head, 4.0, closed=True))
    canvas.paint(np.maximum(halo, polygon(canvas, head)), (1, 1, 1), alpha=0.9)
    canvas.paint(stroke(canvas, shaft, width), ARROW)
    canvas.paint(polygon(canvas, head), ARROW)
    canvas.paint(stroke(canvas, head, 1.0, closed=True), ARROW)


def draw_icon() -> np.ndarray:
    """Return the icon as a (SIZE, SIZE, 4) uint8 RGBA array (row 0 at the top)."""
    canvas = Canvas()
    # Fixed series: blue, lower left. Moving series: orange, smaller and rotated, upper right.
    blue_centers = [(50, 109 - 10 * n) for n in range(4)]
    draw_stack(canvas, blue_centers, BLUE, OUTLINE_BLUE, half_width=30, half_depth=10, skew=10)
    angle = -18.0
    step = np.array([0.0, -8.0]) @ _rotation(angle).T
    orange_centers = [np.array([92.0, 45.0]) + n * step for n in range(4)]
    draw_stack(canvas, orange_centers, ORANGE, OUTLINE_ORANGE, half_width=22, half_depth=7.5, skew=7.5, angle=angle)
    # The registration maps moving onto fixed: the arrow runs from the orange stack to the blue one.
    draw_arrow(canvas, start=(56, 14), control=(18, 12), end=(20, 54))
    return canvas.downsampled()


def write_png(rgba: np.ndarray, path: Path) -> None:
    """Write an RGBA uint8 array (row 0 at the top) with vtkPNGWriter."""
    image = vtk.vtkImageData()
    height, width = rgba.shape[:2]
    image.SetDimensions(width, height, 1)
    flipped = np.ascontiguousarray(rgba[::-1])  # VTK's row 0 is the bottom row
    scalars = numpy_support.numpy_to_vtk(flipped.reshape(-1, 4), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()


def main() -> None:
    rgba = draw_icon()
    for path in OUTPUTS:
        write_png(rgba, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
