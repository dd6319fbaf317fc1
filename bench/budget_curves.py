"""Budget curves: quality against training minutes, from `bench/compare.py` results, as a table and a plot.

    python bench/budget_curves.py 3.5=/tmp/m/s29/spectrogram/compare.csv 10=/tmp/m/voices10/compare.csv \
        --metrics mel_distance stoi pesq_wb dnsmos_ovrl dnsmos_prior --out docs/images/voices-budget-curves.png

Each argument is MINUTES=CSV: the compare.csv of a run made at that budget (its `--steps` being the recipe's
step count in that many minutes on the quiet machine). Rows are matched by recipe name; each recipe is one
line per metric. Prints a markdown table (recipe, minutes, steps, the metrics) and writes the plot (needs
matplotlib, the `plots` extra).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_points(specs: list[str]) -> list[dict]:
    points = []
    for spec in specs:
        minutes, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"{spec}: expected MINUTES=CSV")
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                points.append({**row, "minutes": float(minutes)})
    return sorted(points, key=lambda p: (p["recipe"], p["minutes"]))


def value(point: dict, metric: str) -> float:
    text = point.get(metric, "")
    return float(text) if text not in ("", "None", None) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("points", nargs="+", metavar="MINUTES=CSV")
    parser.add_argument("--metrics", nargs="+", default=["mel_distance", "stft_distance", "frechet_learned"])
    parser.add_argument("--labels", nargs="*", default=[], metavar="RECIPE=LABEL", help="Names in the legend.")
    parser.add_argument("--columns", type=int, default=3, help="Plots per row.")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", default=None, help="PNG to write (none: the table only).")
    args = parser.parse_args()
    points = read_points(args.points)
    labels = dict(x.split("=", 1) for x in args.labels)
    print("| recipe | minutes | steps | " + " | ".join(args.metrics) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(args.metrics))
    for p in points:
        print(f"| {labels.get(p['recipe'], p['recipe'])} | {p['minutes']:g} | {p['steps']} | "
              + " | ".join(f"{value(p, m):g}" for m in args.metrics) + " |")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = sorted({p["recipe"] for p in points})
    columns = min(args.columns, len(args.metrics))
    rows = -(-len(args.metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.0 * rows), squeeze=False)
    for axis in axes.flat[len(args.metrics):]:
        axis.set_visible(False)
    for axis, metric in zip(axes.flat, args.metrics, strict=False):  # more axes than metrics in the last row
        for recipe in recipes:
            mine = [p for p in points if p["recipe"] == recipe]
            axis.plot([p["minutes"] for p in mine], [value(p, metric) for p in mine], "o-",
                      label=labels.get(recipe, recipe))
        axis.set_xscale("log")
        axis.set_xticks(sorted({p["minutes"] for p in points}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("training minutes (2 cores)")
        axis.set_title(metric.replace("_", " "))
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if args.title:
        figure.suptitle(args.title)
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
