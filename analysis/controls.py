"""Negative-control regions of a chest CT: where a lung attribute must not act.

A counterfactual effect is a finding only when it is *specific*: larger in the target region
than where the attribute cannot act. :func:`control_labels` derives, from one volume and its
lung/airway label map, a label map of three control regions (:data:`CONTROL_REGIONS`):

============== ===== ===========================================================================
region         label rule
============== ===== ===========================================================================
outside-body   1     air outside the body: voxels below ``air_hu`` (default -500 HU) that carry
                     no mask label and are connected (6-connectivity) to a face of the volume
body           2     inside the body outline (every voxel not outside-body) except the masked
                     structures (lungs, airway) dilated by ``margin`` voxels (default 2, a
                     6-connected dilation), which keeps partial-volume edges out of the control
(margin)       3     the masked structures and their margin: no control by itself
whole          1-3   every voxel of the volume
============== ===== ===========================================================================

Air inside the body that does not reach a face (a stomach gas bubble) belongs to ``body``.
The rule needs no body mask; it reads the outline from the volume, so it is computed on the
volume a comparison is anchored to (the reference counterfactual, or the subject's CT).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONTROL_REGIONS", "OUTSIDE_BODY", "BODY", "MARGIN", "control_labels", "body_outline",
           "synthetic_body", "BODY_MARGIN_MM"]

OUTSIDE_BODY, BODY, MARGIN = 1, 2, 3
BODY_MARGIN_MM = 30.0  # chest wall around the lungs assumed by :func:`synthetic_body`
CONTROL_REGIONS: dict[str, tuple[int, ...]] = {
    "outside-body": (OUTSIDE_BODY,),
    "body": (BODY,),
    "whole": (OUTSIDE_BODY, BODY, MARGIN),
}


def control_labels(volume: np.ndarray, labels: np.ndarray, *, air_hu: float = -500.0,
                   margin: int = 2) -> np.ndarray:
    """Label map of the control regions of one volume (rule in the module docstring).

    Parameters
    ----------
    volume : ndarray of float, shape (n_x, n_y, n_z)
        Intensities in HU.
    labels : ndarray of int, shape (n_x, n_y, n_z)
        The target structures' label map (0 background, any non-zero label masked: lungs and
        airway).
    air_hu : float
        Air threshold in HU: outside-body voxels are strictly below it.
    margin : int
        Voxels by which the masked structures are dilated before they are cut out of ``body``
        (0 keeps them as they are).

    Returns
    -------
    ndarray of uint8, shape (n_x, n_y, n_z)
        :data:`OUTSIDE_BODY`, :data:`BODY` or :data:`MARGIN` at every voxel; the regions are
        read with :data:`CONTROL_REGIONS`.

    Raises
    ------
    ValueError
        If the arrays are not 3-D on one grid, ``volume`` holds non-finite HU, or ``margin`` is
        negative.
    """
    volume, labels = np.asarray(volume), np.asarray(labels)
    if volume.ndim != 3 or labels.shape != volume.shape:
        raise ValueError(f"volume and labels: expected two 3-D arrays of one shape, got "
                         f"{volume.shape} and {labels.shape}")
    if not np.isfinite(volume).all():
        raise ValueError("volume: holds non-finite HU (NaN or inf); expected finite intensities")
    if int(margin) != margin or margin < 0:
        raise ValueError(f"margin: expected a whole number of voxels >= 0, got {margin}")
    masked = labels != 0
    outside = ~body_outline(volume, masked, air_hu=air_hu)
    excluded = (ndimage.binary_dilation(masked, iterations=int(margin)) if margin else masked)
    result = np.full(volume.shape, MARGIN, np.uint8)
    result[outside] = OUTSIDE_BODY
    result[~outside & ~excluded] = BODY
    return result


def body_outline(volume: np.ndarray, labels: np.ndarray | None = None, *,
                 air_hu: float = -500.0) -> np.ndarray:
    """The body and everything in it: every voxel that is not ``outside-body`` air.

    Parameters
    ----------
    volume : ndarray of float, shape (n_x, n_y, n_z)
        Intensities in HU.
    labels : ndarray, shape (n_x, n_y, n_z), optional
        Label map; its non-zero voxels (lungs, airway) are never outside the body, even where
        the airway opens onto a face of the volume.
    air_hu : float
        Air threshold in HU.

    Returns
    -------
    ndarray of bool, shape (n_x, n_y, n_z)
        False at air below ``air_hu`` that carries no label and is 6-connected to a face.
    """
    volume = np.asarray(volume)
    masked = np.zeros(volume.shape, bool) if labels is None else np.asarray(labels) != 0
    components, _ = ndimage.label((volume < air_hu) & ~masked)
    faces = np.concatenate([np.unique(np.take(components, index, axis=axis))
                            for axis in range(3) for index in (0, -1)])
    return ~np.isin(components, faces[faces > 0])


def synthetic_body(labels: np.ndarray, spacing: tuple[float, float, float], *,
                   margin_mm: float = BODY_MARGIN_MM) -> np.ndarray:
    """A body outline drawn from a lung mask alone, for a subject without a CT.

    The rule: the convex hull of the labelled voxels projected along array axis 2 (the long
    axis of the body on a RAS grid), grown by ``margin_mm`` in that plane, on every slice. A
    chest wall of uniform thickness around the lungs' widest section: the abdomen, the neck and
    a thick or thin wall are not modelled; give the subject's CT when there is one.

    Parameters
    ----------
    labels : ndarray of int, shape (n_x, n_y, n_z)
        Non-zero at the lungs and airway; at least three non-collinear columns.
    spacing : tuple of 3 float
        Voxel size in mm.
    margin_mm : float
        Wall thickness added around the hull, mm.

    Returns
    -------
    ndarray of bool, shape (n_x, n_y, n_z)

    Raises
    ------
    ValueError
        If ``labels`` is empty or its projection has no area.
    """
    from scipy.spatial import Delaunay  # only here: scipy.spatial costs 0.1 s to import

    projection = np.asarray(labels).any(axis=2)
    points = np.argwhere(projection)
    if len(points) < 3 or np.linalg.matrix_rank(points - points[0]) < 2:
        raise ValueError("labels: need a labelled region with an area across axes 0 and 1 to "
                         "draw a body around")
    grid = np.indices(projection.shape).reshape(2, -1).T
    hull = (Delaunay(points).find_simplex(grid) >= 0).reshape(projection.shape) | projection
    distance = ndimage.distance_transform_edt(~hull, sampling=spacing[:2])
    section = distance <= margin_mm
    return np.broadcast_to(section[:, :, None], np.shape(labels)).copy()
