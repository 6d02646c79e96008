"""The private MRML scene behind the Python API, and the lifetime of the nodes it holds.

The use cases of :mod:`AlignSeriesLib.operations` work on MRML nodes; the API's objects
(:class:`~alignseries.volume.Volume`, transform results) each own one node of this scene, which is
removed when the object is garbage collected, so a notebook that loads many volumes does not grow.
Inside the Slicer application :func:`AlignSeriesLib.mrml.new_scene` gives the application's scene.
"""

from __future__ import annotations

import weakref

from AlignSeriesLib import mrml

_SCENE = None


def scene():
    """The API's MRML scene (made on first use, set up like the Slicer application's)."""
    global _SCENE
    if _SCENE is None:
        _SCENE = mrml.new_scene()
    return _SCENE


def own(owner, node, *keep_alive) -> None:
    """Remove ``node`` (with its display and storage nodes) from the scene when ``owner`` is collected.

    The objects in ``keep_alive`` (e.g. the volumes a transform node references) live at least as long.
    """
    weakref.finalize(owner, _remove, scene(), node, keep_alive)


def _remove(scene_, node, keep_alive) -> None:
    mrml.remove_with_helpers(scene_, node)


def remove(node) -> None:
    """Remove a temporary node now (no-op for None)."""
    mrml.remove_with_helpers(scene(), node)
