"""The bundled demo model: a small GPT-2 trained here on the project's own IOI prompts.

`python -m circuit_core.demo.train` rebuilds data/models/ioi-demo; `--evaluate-only` measures it.
"""
