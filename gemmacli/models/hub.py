"""Models from the Hugging Face Hub, fetched with huggingface_hub.snapshot_download.

Only what a safetensors model needs is fetched (HUB_FILE_PATTERNS), and every Hub failure becomes one
gemmacli error a user can act on. HF_TOKEN, HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE are read by
huggingface_hub itself; huggingface_hub is imported inside the functions so `gemmacli --help` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from gemmacli.errors import GemmacliError, ModelNotFoundError, ModelUnavailableError

# fnmatch patterns, as snapshot_download applies them: `*` also matches `/`, so "*config.json" covers
# sentence-transformers module folders such as "1_Pooling/config.json". Pickled or foreign weights
# (*.bin, *.pt, *.pth, *.onnx, *.gguf, *.msgpack, *.h5) are never fetched: nothing below matches them.
HUB_FILE_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*config.json",  # config, generation_config, tokenizer_config, preprocessor_config, processor_config...
    "config_sentence_transformers.json",
    "modules.json",
    "*tokenizer.json",
    "*tokenizer.model",
    "*special_tokens_map.json",
    "*added_tokens.json",
    "*chat_template.json",
    "*.jinja",
    "*vocab.json",
    "*vocab.txt",
    "*merges.txt",
    "*.tiktoken",
    "*normalizer.json",
)

# Hugging Face's rule for each half of owner/name: letters, digits, '-', '_', '.', at most 96,
# starting and ending with a letter or digit.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


def looks_like_repo_id(name: str) -> bool:
    """True for `owner/name` as the Hub allows it; local paths like `./x/y` or `a/b/c` are not repo ids."""
    # '--' is the separator in cache folder names (models--owner--name), so the Hub forbids it too.
    return bool(_REPO_ID.match(name)) and ".." not in name and "--" not in name and not name.endswith(".git")


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id` in the HF cache, or None when it is not (fully) cached. No network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not looks_like_repo_id(repo_id):
        return None
    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=list(HUB_FILE_PATTERNS), local_files_only=True
        )
    except LocalEntryNotFoundError:  # also IncompleteSnapshotError: an interrupted download
        return None
    # A folder filled by hf_hub_download (e.g. only config.json) is not a usable model.
    return Path(folder) if _has_files(Path(folder), HUB_FILE_PATTERNS) else None


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    include: list[str] | None = None,
    local_dir: Path | None = None,
    tqdm_class: type | None = None,
) -> Path:
    """Fetch `repo_id` (only files matching `include`, default HUB_FILE_PATTERNS) and return its folder.

    Without `local_dir` the files land in the HF cache, where transformers and `cached_snapshot` find them.
    """
    from huggingface_hub import snapshot_download

    if not looks_like_repo_id(repo_id):
        raise ModelNotFoundError(f"{repo_id!r} is not a Hugging Face repo id (expected owner/name)")
    patterns = list(include or HUB_FILE_PATTERNS)
    try:
        folder = snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_dir=local_dir, tqdm_class=tqdm_class
        )
    except Exception as err:
        if (mapped := _translate(err, repo_id, revision)) is err:
            raise
        raise mapped from err
    if not _has_files(Path(folder), patterns):
        raise _no_match(repo_id, include)
    return Path(folder)


def _has_files(folder: Path, patterns: Sequence[str]) -> bool:
    """Whether `folder` holds a file matching `patterns`, judged the way snapshot_download filters."""
    from huggingface_hub.utils import filter_repo_objects

    # local_dir downloads keep metadata under .cache/huggingface/: that is not the model.
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    found = filter_repo_objects((n for n in names if not n.startswith(".cache/")), allow_patterns=list(patterns))
    return next(iter(found), None) is not None


def _no_match(repo_id: str, include: list[str] | None) -> GemmacliError:
    if include:
        return GemmacliError(f"no file in {repo_id} matches --include {' '.join(include)}")
    return GemmacliError(
        f"{repo_id} has no safetensors weights or config/tokenizer files to download "
        "(gemmacli never fetches .bin, .pt, .onnx or .gguf files; for a GGUF file use `gemmacli import`)"
    )


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and the errors it was raised from: huggingface_hub wraps network failures in LocalEntryNotFoundError."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__
    return chain


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub 2.x talks through httpx2, 1.x through httpx; both name their failures TransportError.
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return (httpx.TransportError, TimeoutError, ConnectionRefusedError)


def _translate(err: Exception, repo_id: str, revision: str | None) -> Exception:
    """One readable gemmacli error for a snapshot_download failure; unknown errors pass through unchanged."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    chain = _causes(err)

    def seen(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    # Order matters: GatedRepoError is a RepositoryNotFoundError, and both are HfHubHTTPErrors.
    if seen(GatedRepoError):
        return ModelUnavailableError(
            f"{repo_id} is gated: accept its licence at {endpoint}/{repo_id} with your account, "
            "then set HF_TOKEN or run `hf auth login`"
        )
    if seen(RevisionNotFoundError):
        return ModelNotFoundError(
            f"{repo_id} has no revision {revision or 'main'!r} (branch, tag or commit) on the Hub"
        )
    if seen(DisabledRepoError):
        return ModelUnavailableError(f"{repo_id} has been disabled on the Hugging Face Hub")
    if seen(RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{repo_id} was not found on the Hugging Face Hub (or it is private and HF_TOKEN gives no access)"
        )
    if seen(OfflineModeIsEnabled) or constants.is_offline_mode():
        return ModelUnavailableError(
            f"offline mode is on (HF_HUB_OFFLINE) and {repo_id} is not cached: "
            f"run `gemmacli download {repo_id}` on a connected machine"
        )
    if seen(*_network_errors()):
        return ModelUnavailableError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {repo_id}: check the network, "
            "proxy or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use cached models only"
        )
    if http := next((e for e in chain if isinstance(e, HfHubHTTPError)), None):
        status = http.response.status_code if http.response is not None else "?"
        return ModelUnavailableError(f"the Hugging Face Hub at {endpoint} answered HTTP {status} for {repo_id}")
    if isinstance(err, OSError):  # disk full, permissions, a file cut short by the network...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = ModelUnavailableError if isinstance(err, LocalEntryNotFoundError) else GemmacliError
        return kind(f"downloading {repo_id} failed: {reason}")
    return err
