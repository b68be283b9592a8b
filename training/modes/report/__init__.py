"""`--mode=report`: what a run learned, as figures and one HTML page; and several runs compared.

    python train.py --mode=report --workdir=runs/cnn [--checkpoint=best|latest|STEP]
    python train.py --mode=report runs/cnn runs/mlp [--workdir=runs/comparison]

`write_report(workdir)` (write.py) reads the run's `metrics.jsonl` (and `test_metrics.json` once
it has finished), restores its best checkpoint (the latest when none ranks best), predicts the
test split (as the run evaluated it) and writes into the workdir: `learning_curves.png`,
`confusion_matrix.png`, `per_class.png`, `mistakes.png` and `report.html` (one self-contained
page: the images are embedded), and the same figures as TensorBoard images. It works on a
finished run, one still running, or a killed one. `write_comparison(workdirs, output_dir)`
(compare.py) overlays several runs' curves and tabulates the settings in which they differ and
their results; it needs no checkpoint arrays and no data.

- records.py  reading a workdir (metric records, status) and writing files whole
- figures.py  the figures (matplotlib, imported only when one is drawn)
- page.py     report.html
- write.py    one run's report
- compare.py  several runs compared

Every failure is a `ReportError`, which `train.py` prints as one line, and which
training/cli.py turns into a warning after a training run.
"""

from training.modes.report.compare import format_comparison, write_comparison
from training.modes.report.records import ReportError
from training.modes.report.write import format_result, write_report

__all__ = ["ReportError", "format_comparison", "format_result", "write_comparison",
           "write_report"]
