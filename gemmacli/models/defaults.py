"""The model each command uses when none is named: one constant per role, each a catalog name or Hub id.

The server and the one-shot commands differ on purpose: a server is worth a capable model, while `chat`,
`bench` and `smoke` should answer on any machine, offline too, with a model the `demo` extra bundles.
"""

DEFAULT_SERVE_MODEL = "google/gemma-3-12b-it"  # `gemmacli serve` without -m: text and images, from the Hub
DEFAULT_CHAT_MODEL = "gemma-3-270m"  # chat, bench and smoke: small, and bundled with the demo extra
DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"  # embed: bundled with the demo extra
DEFAULT_TRANSCRIBE_MODEL = "whisper-tiny.en"  # transcribe: bundled with the demo extra
