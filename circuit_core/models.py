"""Load a transformer through TransformerLens' TransformerBridge, from a hub name or a local folder.

Every model the project touches — GPT-2 from the hub, a user's folder, the bundled demo, the tiny
models built by the tests — goes through `load_model`, so the tests exercise the real path.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_MODEL_DIR = DATA_DIR / "models" / "ioi-demo"
DEMO_ALIASES = {"demo", "ioi-demo"}
DEFAULT_MODEL = "gpt2"
HUB_HOST = "huggingface.co"
# The weights' and the computation's floating-point type (`load_model(dtype=)`, `--dtype`). float32 is the
# default everywhere; bfloat16 / float16 halve the memory and, on a GPU, the time, and keep every figure
# within the tolerance the README states (tests/core/test_dtype.py).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_DTYPE = "float32"
# How far the engine's logits may be from the bridge's own in its check (a share of the largest logit):
# two orders of summation in 8 (bfloat16) or 11 (float16) significant bits differ by about this much.
AGREEMENT = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}


def dtype_name(dtype) -> str:
    """"float32", "bfloat16" or "float16" from a name ("fp32", "bf16", "half" too) or a torch.dtype; None:
    the default. Raises ValueError for anything else."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, torch.dtype):
        for name, value in DTYPES.items():
            if value == dtype:
                return name
        raise ValueError(f"unsupported dtype {dtype}; one of {', '.join(DTYPES)}")
    text = str(dtype).strip().lower().removeprefix("torch.")
    text = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(text, text)
    if text not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; one of {', '.join(DTYPES)}")
    return text


class ModelLoadError(RuntimeError):
    """The model could not be had. The message says what was tried and what to do instead;
    `reason` is a few words for one-line notices."""

    def __init__(self, message: str, reason: str = "see the error"):
        super().__init__(message)
        self.reason = reason


@dataclass
class LoadedModel:
    """A bridge plus what the rest of the code needs to know about it.

    `lock` guards hooked forward passes: hooks live on the model object, and Streamlit sessions
    share one cached model across threads.
    """

    bridge: object
    name: str  # what the user asked for ("gpt2", a folder, "demo")
    source: str  # "hub", "folder" or "demo"
    device: str
    dtype: str = DEFAULT_DTYPE  # the weights' floating-point type: a DTYPES name
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Shared by every evaluator of this model, so memory stays bounded however many there are.
    residual_cache_bytes: int = 512 << 20
    # Evaluators kept for reuse (see `evaluators`): at most this many, holding at most these bytes.
    max_evaluators: int = 16  # variants (another position scope) are cheap entries
    evaluator_bytes: int = 1536 << 20
    _blocks: object = field(default=None, repr=False)
    _residuals: object = field(default=None, repr=False)
    _evaluators: object = field(default=None, repr=False)

    @property
    def blocks(self):
        """The model's weights as plain-tensor blocks (blocks.py: GPT-2 style or any decoder it
        describes), or None; built and checked against the bridge's own forward pass once per model
        (by `load_model`, so that the weights are shared from the start: the bridge's parameters become
        views of the blocks' tensors wherever the two hold the same values)."""
        with self.lock:
            if self._blocks is None:
                from .blocks import Blocks

                blocks = Blocks.from_model(self)
                if blocks is not None:
                    n_ctx = int(getattr(self.bridge.cfg, "n_ctx", 16))
                    probe = torch.randint(0, int(self.bridge.cfg.d_vocab), (2, min(12, n_ctx)),
                                          generator=torch.Generator().manual_seed(0)).to(self.device)
                    with torch.no_grad():
                        ok = blocks.agrees_with(self.bridge, probe, AGREEMENT[self.dtype])
                    blocks = blocks if ok else None
                    if blocks is not None:  # one copy of the weights: the bridge's become views of these
                        blocks.share_weights(self.bridge)
                self._blocks = blocks or False
            return self._blocks or None

    @property
    def residual_cache(self):
        """Residuals kept between evaluator calls (evaluate.py), one LRU per model, bounded in bytes."""
        with self.lock:
            if self._residuals is None:
                from .cache import BoundedCache

                gpu = str(self.device).startswith("cuda")
                self._residuals = BoundedCache(max_bytes=4 << 30 if gpu else self.residual_cache_bytes)
            return self._residuals

    @property
    def evaluators(self):
        """This model's evaluators by methodology (evaluate.EvaluatorCache): LRU bounded in entries
        and in bytes; `model.evaluators.get(methodology)` builds or reuses one."""
        with self.lock:
            if self._evaluators is None:
                from .evaluate import EvaluatorCache

                self._evaluators = EvaluatorCache(self, self.max_evaluators, self.evaluator_bytes)
            return self._evaluators

    @property
    def tokenizer(self):
        return self.bridge.tokenizer

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def d_head(self) -> int:
        return int(self.bridge.cfg.d_head)

    def describe(self) -> dict:
        """Plain facts for a run record."""
        cfg = self.bridge.cfg
        return {
            "name": self.name,
            "source": self.source,
            "architecture": type(self.bridge.original_model).__name__,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_model": int(cfg.d_model),
            "d_head": self.d_head,
            "d_vocab": int(cfg.d_vocab),
            "device": self.device,
            "dtype": self.dtype,
            # Which path computed the numbers: the engine (blocks.py), or the hooked forward pass when the
            # engine does not describe this model or its self-check failed (same numbers, slower).
            "engine": "blocks" if self.blocks is not None else "hooks",
        }


class _Shared(torch.Tensor):
    """A tensor whose clone() is itself: TransformerLens' weight processing starts each step (fold_ln,
    centring) with a copy of the whole state dict "to avoid modifying the original", then only ever
    replaces entries, never writes into them; passed these, its steps share the tensors they leave alone
    instead of holding two or three copies of the model at once while loading. Operations on one give a
    plain tensor (no __torch_function__)."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def clone(self, *args, **kwargs):
        return self


@contextmanager
def _lean_weight_processing():
    """While loading: TransformerLens' weight processing without its defensive copies of the whole state
    dict (see _Shared): each step that makes one gets the dict's tensors as _Shared. Only the steps
    load_model asks for (fold_ln and centring; value biases, the one step that writes into its copy, are
    not folded); tests/core/test_memory.py holds the processed weights to the stock processing's, bit for
    bit, on every architecture."""
    from transformer_lens.weight_processing import ProcessWeights

    steps = ("fold_layer_norm", "center_writing_weights", "center_unembed")
    stock = {name: ProcessWeights.__dict__[name] for name in steps if name in ProcessWeights.__dict__}

    def lean(step):
        def run(state_dict, *args, **kwargs):
            shared = {k: v.as_subclass(_Shared) if type(v) is torch.Tensor else v for k, v in state_dict.items()}
            out = step(shared, *args, **kwargs)
            return {k: v.as_subclass(torch.Tensor) if isinstance(v, _Shared) else v for k, v in out.items()}
        return run

    with _PROCESSING_LOCK:
        for name, method in stock.items():
            setattr(ProcessWeights, name, staticmethod(lean(method.__func__)))
        try:
            yield
        finally:
            for name, method in stock.items():
                setattr(ProcessWeights, name, method)


_PROCESSING_LOCK = threading.Lock()  # two threads loading at once: one patch at a time


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _hub_reachable(timeout: float = 3.0) -> bool:
    # A quick probe, so an offline machine fails in seconds instead of after the hub client's
    # retries (about half a minute).
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


def resolve(name_or_path: str) -> tuple[str, str]:
    """Map what the user typed to (source, location): demo alias, existing folder, or hub name."""
    if name_or_path in DEMO_ALIASES:
        return "demo", str(DEMO_MODEL_DIR)
    path = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path and path.exists()
    if path.is_dir():
        return "folder", str(path.resolve())
    if looks_like_path:
        raise ModelLoadError(
            f"Could not load model '{name_or_path}': no such folder. Pass a folder holding a "
            "Hugging Face model (config.json, weights, tokenizer files), a hub name such as "
            "'gpt2', or 'demo' for the bundled demo model."
        )
    return "hub", name_or_path


def load_model(name_or_path: str, device: str | None = None, dtype=None) -> LoadedModel:
    """Load `name_or_path` (hub name, local folder, or "demo") with compatibility mode on, its weights in
    `dtype` (DTYPES: "float32", the default, "bfloat16" or "float16"; a torch.dtype too).

    Raises ModelLoadError when the model cannot be had, ValueError for an unknown dtype.
    """
    source, location = resolve(name_or_path)
    device = device or default_device()
    dtype = dtype_name(dtype)
    if source in ("folder", "demo"):
        if not (Path(location) / "config.json").exists():
            hint = (
                "The bundled demo model is missing from this checkout."
                if source == "demo"
                else "Expected a Hugging Face model folder (config.json, model weights, tokenizer files)."
            )
            raise ModelLoadError(f"Could not load model '{name_or_path}' from folder {location}: no config.json. {hint}")
    elif not os.environ.get("HF_HUB_OFFLINE") and not _in_hub_cache(location) and not _hub_reachable():
        raise ModelLoadError(
            f"Could not load model '{name_or_path}': it is not in the local Hugging Face cache and "
            f"the hub ({HUB_HOST}) cannot be reached. Download it on a connected machine and pass "
            "its local folder (--model path/to/folder), or copy it into the cache and set "
            "HF_HUB_OFFLINE=1; '--model demo' uses the bundled demo model.",
            reason="not in the local cache, hub unreachable",
        )
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in tables and logs
    try:
        bridge = TransformerBridge.boot_transformers(location, device=device, dtype=DTYPES[dtype])
        # Value biases stay inside hook_z, so a head's z is exactly its output in the model's own
        # parametrisation: zero ablation then removes the head's whole contribution (but b_O),
        # as it would in plain Hugging Face code. Mean and resample ablation do not depend on this.
        with _lean_weight_processing():
            bridge.enable_compatibility_mode(disable_warnings=True, fold_value_biases=False)
    except Exception as exc:  # the hub client, transformers and TL raise many kinds
        raise ModelLoadError(
            f"Could not load model '{name_or_path}' (tried {source} '{location}'): "
            f"{type(exc).__name__}: {exc}. Check the name (any TransformerLens-supported hub "
            "name), or pass a local Hugging Face folder; offline, set HF_HUB_OFFLINE=1 to use "
            "the local cache; '--model demo' uses the bundled demo model.",
            reason=("HF_HUB_OFFLINE is set and it is not in the local cache"
                    if os.environ.get("HF_HUB_OFFLINE") and isinstance(exc, OSError)
                    else f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"),
        ) from exc
    bridge.eval()
    model = LoadedModel(bridge=bridge, name=name_or_path, source=source, device=device, dtype=dtype)
    model.blocks  # built now, so the bridge shares their tensors before anything reads its weights
    gc.collect()  # what the bridge no longer holds goes before the first evaluator asks for memory
    return model


def load_model_or_demo(name_or_path: str, device: str | None = None, dtype=None) -> tuple[LoadedModel, str | None]:
    """Load the requested model; if it cannot be had, fall back to the bundled demo.

    Returns (model, notice) where notice is a one-line explanation when the fallback happened.
    """
    try:
        return load_model(name_or_path, device, dtype), None
    except ModelLoadError as exc:
        if resolve_quietly(name_or_path) == "demo":
            raise
        logging.getLogger(__name__).info("falling back to demo: %s", exc)
        notice = f"Model '{name_or_path}' could not be loaded ({exc.reason}); using the bundled demo model."
        try:
            return load_model("demo", device, dtype), notice
        except ModelLoadError as demo_exc:
            raise ModelLoadError(f"{exc} The bundled demo could not be loaded either: {demo_exc}") from exc


def resolve_quietly(name_or_path: str) -> str | None:
    try:
        return resolve(name_or_path)[0]
    except ModelLoadError:
        return None

