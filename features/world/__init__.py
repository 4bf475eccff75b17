"""The synthetic world: 27 source-system extracts with realistic faults, and the hidden truth.

``generate_world`` writes the extracts, the open backlog list, the truth folder and a
manifest. Everything is deterministic for a given seed and scale.
"""

from features.world.config import SCALES, WorldConfig
from features.world.generate import generate_world

__all__ = ["SCALES", "WorldConfig", "generate_world"]
