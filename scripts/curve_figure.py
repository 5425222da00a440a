"""The faithfulness curve of a run record as a PNG (the Report page's chart): the README's figure.

    python -m circuit_core curve --model demo --circuit data/circuits/ioi-demo.json --out curve.json
    python -m scripts.curve_figure curve.json docs/curve-demo.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> None:
    from circuit_core.curves import Curve
    from ui.charts import curve_caption, faithfulness_curve_chart, style
    from ui.report import png

    src, out = (argv or sys.argv[1:])[:2]
    curve = Curve.from_dict(json.loads(Path(src).read_text())["results"]["curve"])
    Path(out).write_bytes(png(style(faithfulness_curve_chart(curve))))
    print(out)
    print(curve_caption(curve))


if __name__ == "__main__":
    main()
