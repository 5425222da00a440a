"""Resident memory at each stage of loading a model: `python -m bench.load_stages FOLDER [DTYPE]`.

Prints VmHWM (the peak so far), VmRSS and its anonymous / file-backed parts (/proc/self/status) after the
imports, after TransformerBridge.boot_transformers, around each of TransformerLens' weight-processing steps
(fold_ln, centring the writing weights, centring the unembedding) and once `load_model` has returned (the
engine's blocks built and shared). File-backed pages are mostly the checkpoint's, memory-mapped.
"""
from __future__ import annotations

import sys
from pathlib import Path


def line(label: str) -> None:
    d = {}
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile")):
            key, value = row.split(":")
            d[key] = int(value.split()[0]) / 2**20
    print(f"{label:34s} peak {d['VmHWM']:.2f} GB  resident {d['VmRSS']:.2f} GB  "
          f"(anonymous {d['RssAnon']:.2f}, file-backed {d['RssFile']:.2f})", flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    import torch

    torch.set_num_threads(2)
    import transformers  # noqa: F401
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.weight_processing import ProcessWeights

    line("imports")
    from circuit_core import models

    boot = TransformerBridge.boot_transformers

    def booted(*args, **kwargs):
        bridge = boot(*args, **kwargs)
        line("boot_transformers")
        return bridge

    TransformerBridge.boot_transformers = booted
    for name in ("fold_layer_norm", "center_writing_weights", "center_unembed"):
        step = ProcessWeights.__dict__[name].__func__

        def run(*args, _step=step, _name=name, **kwargs):
            out = _step(*args, **kwargs)
            line(f"  after {_name}")
            return out

        setattr(ProcessWeights, name, staticmethod(run))
    models.load_model(argv[0], device="cpu", dtype=argv[1] if len(argv) > 1 else None)
    line("load_model returned")


if __name__ == "__main__":
    main()
