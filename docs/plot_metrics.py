"""Plot a run's metrics.csv (loss and learning rate against step) to a PNG.

pip install matplotlib
python docs/plot_metrics.py docs/eval/shapes-tiny-metrics.csv docs/eval/shapes-tiny-loss.png
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, out: str) -> None:
    with open(src, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, loss_ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    loss_ax.plot(steps, [float(r["loss"]) for r in rows], color="tab:blue")
    loss_ax.set(xlabel="step", ylabel="training loss (velocity MSE)", yscale="log")
    lr_ax = loss_ax.twinx()
    lr_ax.plot(steps, [float(r["lr"]) for r in rows], color="tab:gray", linestyle="--")
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    loss_ax.set_title(src.rsplit("/", 1)[-1])
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
