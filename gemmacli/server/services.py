"""What route handlers get injected: the served models and their manager, the engine, the embedding batcher,
metrics and settings."""

from __future__ import annotations

from dataclasses import dataclass

from gemmacli.media import MediaLimits
from gemmacli.server.batching import EmbedBatcher
from gemmacli.server.engine import Engine
from gemmacli.server.metrics import Metrics
from gemmacli.server.models_manager import ModelManager
from gemmacli.server.registry import Registry
from gemmacli.server.settings import ServerSettings


@dataclass
class Services:
    registry: Registry
    engine: Engine
    metrics: Metrics
    settings: ServerSettings
    embed_batcher: EmbedBatcher
    models: ModelManager  # loads, leases and unloads what `registry` serves
    media_limits: MediaLimits = MediaLimits()
