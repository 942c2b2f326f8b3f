"""PNG plots of ``basicsr analyze`` (matplotlib ``Figure`` objects rendered by Agg; no pyplot global state)."""
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

DPI = 110


def _colors(n: int) -> List[tuple]:
    cmap = colormaps['tab10' if n <= 10 else 'tab20']
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches='tight')


def _heatmap(ax, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], cmap: str, vmin: float,
             vmax: float, fmt: str = '{:.2f}'):
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha='right')
    ax.set_yticks(range(len(rows)), rows)
    if matrix.size <= 144:
        mid = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, fmt.format(value), ha='center', va='center', fontsize=8,
                        color='white' if value < mid else 'black')
    return image


def plot_embedding(path: str, coords: np.ndarray, labels: Sequence[int], names: Sequence[str],
                   ratio: np.ndarray, clean_coords: Optional[np.ndarray] = None) -> None:
    """Scatter of the 2-D PCA map coloured by source; hollow markers: the same images with the rain removed."""
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    labels = np.asarray(labels)
    for s, (name, color) in enumerate(zip(names, _colors(len(names)))):
        pts = coords[labels == s]
        ax.scatter(pts[:, 0], pts[:, 1], s=22, color=color, label=name, alpha=0.85)
        if clean_coords is not None:
            clean = clean_coords[labels == s]
            ax.scatter(clean[:, 0], clean[:, 1], s=22, facecolors='none', edgecolors=[color], alpha=0.6, marker='o')
    if clean_coords is not None:
        ax.scatter([], [], s=22, facecolors='none', edgecolors='grey', label='rain removed (hollow)')
    ax.set_xlabel(f'PC1 ({100 * ratio[0]:.1f}% of variance)')
    ax.set_ylabel(f'PC2 ({100 * ratio[1]:.1f}% of variance)')
    ax.set_title('Representations z (key encoder), PCA')
    ax.legend(fontsize=8, loc='best')
    _save(fig, path)


def plot_relationships(path: str, matrix: np.ndarray, names: Sequence[str]) -> None:
    """Heatmap of the dataset-relationship matrix (1 = same distribution)."""
    size = 2.5 + 0.55 * len(names)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = _heatmap(ax, matrix, names, names, 'viridis', 0.0, 1.0)
    fig.colorbar(image, ax=ax, label='similarity of representation distributions')
    ax.set_title('Dataset relationships')
    _save(fig, path)


def plot_impact(path: str, names: Sequence[str], moves: Dict[str, Sequence[float]], swap: np.ndarray) -> None:
    """Left: mean cosine distance z moves per source and edit. Right: move when another source's rain is swapped in
    (rows: the image's source, columns: the source the rain comes from)."""
    fig = Figure(figsize=(11, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    width = 0.8 / max(len(moves), 1)
    x = np.arange(len(names))
    for k, (edit, values) in enumerate(moves.items()):
        ax.bar(x + (k - (len(moves) - 1) / 2) * width, values, width, label=edit)
    ax.set_xticks(x, names, rotation=30, ha='right')
    ax.set_ylabel('mean cosine distance of z (1 - cos)')
    ax.set_title('How z moves: rain vs details')
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    finite = swap[np.isfinite(swap)]
    image = _heatmap(ax2, swap, names, names, 'magma', 0.0, float(finite.max()) if finite.size else 1.0, '{:.2g}')
    ax2.set_xlabel('rain taken from')
    ax2.set_ylabel('image source')
    ax2.set_title('Move when the rain is swapped')
    fig.colorbar(image, ax=ax2)
    _save(fig, path)


def plot_kernel_scales(path: str, rows: List[Dict[str, object]], names: Sequence[str],
                       metric: str = 'rel_kernel_change') -> None:
    """Left: ``metric`` per modulated layer (forward order) per source. Right: its mean over layers per source."""
    fig = Figure(figsize=(12, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    layers = sorted({(r['index'], r['layer']) for r in rows})
    position = {index: k for k, (index, _) in enumerate(layers)}
    means = []
    for name, color in zip(names, _colors(len(names))):
        own = sorted((position[r['index']], r[metric]) for r in rows if r['group'] == name)
        means.append(np.mean([v for _, v in own]) if own else np.nan)
        if own:
            ax.plot([p for p, _ in own], [v for _, v in own], marker='.', color=color, label=name)
    step = max(1, len(layers) // 24)
    ax.set_xticks(range(0, len(layers), step), [layers[k][1] for k in range(0, len(layers), step)], rotation=90,
                  fontsize=6)
    ax.set_ylabel('|W (s - 1)| / |W|' if metric == 'rel_kernel_change' else metric)
    ax.set_title('Modulated kernels vs the plain kernels, per layer')
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.bar(range(len(names)), means, color=_colors(len(names)))
    ax2.set_xticks(range(len(names)), names, rotation=30, ha='right')
    ax2.set_title('Mean over layers, per source')
    _save(fig, path)
