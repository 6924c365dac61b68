"""gemmacli: Gemma 3, Whisper and embedding models on your own machine."""

__version__ = "0.1.0"
