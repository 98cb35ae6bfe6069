"""Plot a run's metrics.csv (loss, validation loss, learning rate against step) to a PNG.

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
    loss_ax.plot(steps, [float(r["loss"]) for r in rows], color="tab:blue", label="training")
    val = [(int(r["step"]), float(r["val_loss_ema"])) for r in rows if r.get("val_loss_ema")]
    if val:
        loss_ax.plot(*zip(*val), "o-", color="tab:orange", markersize=3, label="validation (EMA)")
        loss_ax.legend(loc="upper center")
    loss_ax.set(xlabel="step", ylabel="loss (velocity MSE)", yscale="log")
    lr_ax = loss_ax.twinx()
    lr_ax.plot(steps, [float(r["lr"]) for r in rows], color="tab:gray", linestyle="--")
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    loss_ax.set_title(src.rsplit("/", 1)[-1])
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
