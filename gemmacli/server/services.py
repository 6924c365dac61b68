"""What route handlers get injected: the served models, the engine, metrics and settings."""

from __future__ import annotations

from dataclasses import dataclass

from gemmacli.media import MediaLimits
from gemmacli.server.engine import Engine
from gemmacli.server.metrics import Metrics
from gemmacli.server.registry import Registry
from gemmacli.server.settings import ServerSettings


@dataclass
class Services:
    registry: Registry
    engine: Engine
    metrics: Metrics
    settings: ServerSettings
    media_limits: MediaLimits = MediaLimits()
