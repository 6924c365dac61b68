"""gemmacli: Gemma, Whisper and embedding models on your own machine.

The layers, from the edges in:

- `cli/` (Typer) and `server/` (Litestar) parse, check and render; neither holds model logic. The server
  checks a whole request before it asks `server/models_manager.py` for a model; `server/engine.py` is the one
  thread that runs models.
- `runners/`: one runner per task, listed once in `RUNNERS` (`runners/__init__.py`), each speaking the
  protocol of `runners/base.py` (task, detects, load, warm_up, memory, close).
- The chat runner owns a `Decoder` (`runners/decoder.py`), the one place tokens are produced, driven alike
  by the CLI, the server's engine and `gemmacli bench`: `insert(prompt, params) -> Seq`,
  `step() -> [(Seq, [Delta])]`, `cancel(seq)`. Every step runs each sequence through its stages
  (`runners/stages.py`): logits stages (penalties, logit bias) -> sampler -> detokenizer -> output stages
  (stop strings).
- `models/`: the catalog, resolving names, downloads and imports, and `ModelLoader.build`, which loads a
  prepared model into the runner of its task through `RUNNERS`.
- `types.py`: the neutral dataclasses every layer speaks.

A new task is a runner module, a row in `RUNNERS`, a wire schema and a route. A new decoder stage is a
class in `runners/stages.py` and a line in `Pipeline.build`.
"""

__version__ = "0.1.0"
