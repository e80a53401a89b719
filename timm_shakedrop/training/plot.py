"""Learning-curve plot of a run: loss and top-1 accuracy per epoch, drawn from `summary.csv`."""
import os
from typing import Dict, List

__all__ = ['plot_learning_curve']


def plot_learning_curve(rows: List[Dict[str, float]], path: str, title: str = '') -> str:
    """Draw train and eval loss and eval top-1 accuracy (and the EMA's when present) per epoch into a PNG.

    Uses matplotlib's Agg canvas directly, so the caller's pyplot backend is left alone. The file is
    written through a temporary name, so a reader never sees half a PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row['epoch'] for row in rows]
    figure = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    loss_axes, acc_axes = figure.subplots(1, 2)

    for key, label in (('train_loss', 'train'), ('eval_loss', 'eval'), ('eval_ema_loss', 'eval EMA')):
        if rows and key in rows[0]:
            loss_axes.plot(epochs, [row[key] for row in rows], marker='o', markersize=3, label=label)
    loss_axes.set_xlabel('epoch')
    loss_axes.set_ylabel('loss')
    loss_axes.set_yscale('log')
    loss_axes.legend()
    loss_axes.grid(True, alpha=0.3)

    for key, label in (('eval_top1', 'eval'), ('eval_ema_top1', 'eval EMA')):
        if rows and key in rows[0]:
            acc_axes.plot(epochs, [row[key] for row in rows], marker='o', markersize=3, label=label)
    acc_axes.set_xlabel('epoch')
    acc_axes.set_ylabel('top-1 accuracy (%)')
    acc_axes.legend(loc='lower right')
    acc_axes.grid(True, alpha=0.3)

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    partial_path = f'{path}.partial.png'
    figure.savefig(partial_path, format='png')
    os.replace(partial_path, path)
    return path
