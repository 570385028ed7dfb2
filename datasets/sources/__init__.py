"""Video sources. Each yields RawEpisodes; `robo_genie.datasets.ingest` turns them into frame shards.

Adding a source (RLDS, LeRobot, ...) means writing one class with `episodes()` and registering
it in SOURCES.
"""

from robo_genie.datasets.sources.base import IngestError, RawEpisode, Source
from robo_genie.datasets.sources.lerobot import LeRobotSource
from robo_genie.datasets.sources.rlds import RLDSSource
from robo_genie.datasets.sources.video_folder import VideoFolderSource

SOURCES: dict[str, type] = {"video_folder": VideoFolderSource, "lerobot": LeRobotSource, "rlds": RLDSSource}

__all__ = ["SOURCES", "IngestError", "LeRobotSource", "RLDSSource", "RawEpisode", "Source", "VideoFolderSource"]
