"""The teacher's shape (:class:`TeacherInfo`): what sizes a student's heads and maps its layers.

Small and free of torch, so presets and search-space files can name teachers without loading one.
``Teacher.info`` gives a loaded teacher's; ``TeacherInfo.of`` reads a ``Teacher.describe()``
(also stored in every student checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeacherInfo:
    """The teacher's shape, which sizes the students' heads and maps their layers."""

    num_layers: int
    embed_dim: int
    num_classes: int = 0  # units of its pre-training head (0: no head)

    @classmethod
    def of(cls, description: dict) -> "TeacherInfo":
        """From ``Teacher.describe()`` (also stored in every student checkpoint)."""
        return cls(int(description["num_layers"]), int(description["embed_dim"]), int(description.get("num_classes", 0)))
