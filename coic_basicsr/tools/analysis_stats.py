"""The numbers behind ``basicsr analyze``: one pass over the images, PCA map, dataset-relationship matrix, rain
swaps, kernel-scale statistics."""
import sys
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur
from tqdm import tqdm

from coic_basicsr.archs.modulation import ModulatedConv2d, ModulatedConvTranspose2d
from coic_basicsr.data.transforms import global_view

Loader = Callable[[], Tuple[str, Optional[Tensor], Optional[Tensor]]]  # -> (image name, lq, gt or None)


def pca_2d(codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic PCA to 2-D (SVD of the centred codes, float64).

    Each axis' sign is fixed so that its largest-magnitude loading is positive. Missing axes (fewer than 3 codes
    or rank < 2) are zero.

    Returns:
        ``(coords (N, 2), mean (D,), components (2, D), explained variance ratio (2,))``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    mean = codes.mean(axis=0)
    _, sing, vt = np.linalg.svd(codes - mean, full_matrices=False)
    components = np.zeros((2, codes.shape[1]))
    ratio = np.zeros(2)
    total = float((sing**2).sum())
    for axis in range(min(2, len(sing))):
        if sing[axis] <= 1e-12 * max(sing[0], 1e-300):
            continue
        comp = vt[axis]
        components[axis] = comp if comp[np.argmax(np.abs(comp))] > 0 else -comp
        ratio[axis] = sing[axis]**2 / total
    return (codes - mean) @ components.T, mean, components, ratio


def relationship_matrix(codes: np.ndarray, labels: Sequence[int], num_sources: int) -> Tuple[np.ndarray, float]:
    """Similarity of the sources' code distributions: normalised Gaussian-kernel mean embeddings.

    With ``k(a, b) = exp(-|a - b|^2 / h)`` (``h`` = median of the nonzero pairwise squared distances of all codes)
    and ``K[s, t]`` the mean of ``k`` over all pairs (one code of s, one of t), the similarity is
    ``K[s, t] / sqrt(K[s, s] K[t, t])``: the cosine of the two distributions' kernel mean embeddings. It is
    symmetric, positive semi-definite, in (0, 1], exactly 1 on the diagonal, and 1 off it only for identical
    distributions (1 - it is a normalised MMD).

    Returns:
        ``(matrix (S, S), h)``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    norms = (codes**2).sum(1)
    sq = np.maximum(norms[:, None] + norms[None, :] - 2 * codes @ codes.T, 0.0)
    np.fill_diagonal(sq, 0.0)
    nonzero = sq[np.triu_indices(len(codes), 1)]
    nonzero = nonzero[nonzero > 1e-12]
    bandwidth = float(np.median(nonzero)) if nonzero.size else 1.0
    kernel = np.exp(-sq / bandwidth)
    member = np.stack([(labels == s).astype(np.float64) for s in range(num_sources)])  # (S, N)
    member /= member.sum(axis=1, keepdims=True)
    mean_k = member @ kernel @ member.T
    diag = np.sqrt(np.diag(mean_k))
    matrix = mean_k / diag[:, None] / diag[None, :]
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return matrix, bandwidth


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cos(a, b) per row (codes are unit vectors: 0 = same code, 2 = opposite)."""
    return 1 - torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


class KernelScaleRecorder:
    """Forward hooks on every modulated conv of a network; records how far the generated kernels move from the
    plain (unmodulated) kernels, per layer and per group (e.g. source).

    Per call and sample, with s the kernel scale (``kernel_scale(x, z)``, 1 = unmodulated) and W the kernel:
    ``mean_abs_dev`` = mean |s - 1|, ``rms_dev`` = sqrt(mean (s - 1)^2), ``max_abs_dev`` = max |s - 1|,
    ``rel_kernel_change`` = ||W (s - 1)|| / ||W|| (Frobenius). Values are averaged over samples (and tiles); the
    max is the max.
    """

    METRICS = ('mean_abs_dev', 'rms_dev', 'max_abs_dev', 'rel_kernel_change')

    def __init__(self, net: nn.Module) -> None:
        self.layers: List[Tuple[str, nn.Module]] = [
            (name, m) for name, m in net.named_modules() if isinstance(m, (ModulatedConv2d, ModulatedConvTranspose2d))
        ]
        self.sums: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @contextmanager
    def record(self, group: str) -> Iterator[None]:
        """Record every modulated call made inside the block under ``group``."""
        handles = [m.register_forward_hook(self._hook(name, group), with_kwargs=True) for name, m in self.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str, group: str):
        @torch.no_grad()
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            x = args[0]
            z = kwargs.get('z', args[1] if len(args) > 1 else None)
            if not isinstance(z, Tensor):
                z = module.context.get() if module.context is not None else None
            if z is None:
                return
            if z.shape[0] != x.shape[0]:
                z = z.expand(x.shape[0], -1)
            dev = module.kernel_scale(x, z).double().flatten(1) - 1  # (B, elements)
            weight = module.weight.detach().double().flatten()
            stats = self.sums[(name, group)]
            stats['count'] += dev.shape[0]
            stats['mean_abs_dev'] += dev.abs().mean(1).sum().item()
            stats['rms_dev'] += dev.pow(2).mean(1).sqrt().sum().item()
            stats['max_abs_dev'] = max(stats['max_abs_dev'], dev.abs().max().item())
            stats['rel_kernel_change'] += ((weight * dev).norm(dim=1) / weight.norm().clamp_min(1e-12)).sum().item()

        return hook

    def table(self, groups: Sequence[str]) -> List[Dict[str, object]]:
        """Rows ``{layer, index, group, count, <metrics>}`` in forward-layer order, for groups that ran."""
        rows = []
        for index, (name, _) in enumerate(self.layers):
            for group in groups:
                stats = self.sums.get((name, group))
                if not stats or not stats['count']:
                    continue
                row = {'layer': name, 'index': index, 'group': group, 'count': int(stats['count'])}
                for metric in self.METRICS:
                    row[metric] = stats[metric] if metric == 'max_abs_dev' else stats[metric] / stats['count']
                rows.append(row)
        return rows


class Analysis:
    """Runs the model over every image once and keeps what the sections need (codes, global views)."""

    def __init__(self, model, sources: List[Tuple[str, List[Loader]]], blur_sigma: float) -> None:
        self.model, self.sources, self.blur_sigma = model, sources, blur_sigma
        self.recorder = KernelScaleRecorder(model.net_g)
        self.names: List[str] = []
        self.labels: List[int] = []
        self.reference: Dict[str, str] = {}
        self.skipped: List[str] = []
        self.codes: Dict[str, List[torch.Tensor]] = {k: [] for k in ('z', 'z_clean', 'z_blur')}
        self.clean_views: List[torch.Tensor] = []
        self.rain_views: List[torch.Tensor] = []

    @torch.no_grad()
    def run(self, quiet: bool) -> None:
        m = self.model
        total = sum(len(loaders) for _, loaders in self.sources)
        bar = tqdm(total=total, desc='analyze', unit='img', disable=quiet or None)
        for s, (source, loaders) in enumerate(self.sources):
            for load in loaders:
                bar.update(1)
                try:
                    name, lq, gt = load()
                except ValueError as err:  # a dataset's unreadable pair
                    name, lq, gt = str(err), None, None
                if lq is None:
                    self.skipped.append(f'{source}: {name}')
                    tqdm.write(f"basicsr analyze: skipping {source}: '{name}': unreadable", file=sys.stderr)
                    continue
                lq = lq.to(m.device)
                view = global_view(lq, m.global_size)
                z = m.encode(view)
                with self.recorder.record(source):
                    restored = m.restore(lq, z)
                clean = gt.to(m.device) if gt is not None else restored.clamp(0, 1)
                self.reference[source] = 'gt' if gt is not None else 'restored'
                clean_view = global_view(clean, m.global_size)
                rain = view - clean_view
                blurred = (gaussian_blur(clean_view, [11, 11], [self.blur_sigma] * 2) + rain).clamp(0, 1)
                z_clean, z_blur = m.encode(torch.cat([clean_view, blurred])).chunk(2)
                for key, code in (('z', z), ('z_clean', z_clean), ('z_blur', z_blur)):
                    self.codes[key].append(code[0].cpu())
                self.clean_views.append(clean_view[0].cpu())
                self.rain_views.append(rain[0].cpu())
                self.names.append(name)
                self.labels.append(s)
        bar.close()
        present = sorted(set(self.labels))
        if len(self.labels) < 2:
            raise ValueError(f'analyze: {len(self.labels)} readable image(s); at least 2 are needed')
        for s, (source, _) in enumerate(self.sources):
            if s not in present:
                print(f"basicsr analyze: source '{source}' has no readable image: left out", file=sys.stderr)
        remap = {old: new for new, old in enumerate(present)}
        self.labels = [remap[s] for s in self.labels]
        self.source_names = [self.sources[s][0] for s in present]

    def code_array(self, key: str) -> np.ndarray:
        return torch.stack(self.codes[key]).double().numpy()

    @torch.no_grad()
    def swap_impact(self) -> Tuple[np.ndarray, np.ndarray]:
        """(move, donor attraction) matrices (S, S): the clean view of every image of source s plus the rain layer of
        an image of source t; move = mean cosine distance to the image's own z; attraction = fraction of swapped codes
        closer (cosine) to t's mean code than to s's. NaN on the diagonal."""
        z, labels = torch.stack(self.codes['z']), np.asarray(self.labels)
        count = len(self.source_names)
        centroids = torch.stack([z[labels == s].mean(0) for s in range(count)])
        move, attraction = np.full((count, count), np.nan), np.full((count, count), np.nan)
        for s in range(count):
            own = np.flatnonzero(labels == s)
            for t in range(count):
                donors = np.flatnonzero(labels == t)
                if s == t:
                    continue
                views = torch.stack([self.clean_views[i] + self.rain_views[donors[k % len(donors)]]
                                     for k, i in enumerate(own)]).clamp(0, 1)
                swapped = torch.cat([self.model.encode(b).cpu() for b in views.split(32)])
                move[s, t] = cosine_distance(z[own], swapped).mean().item()
                closer = cosine_distance(swapped, centroids[t][None]) < cosine_distance(swapped, centroids[s][None])
                attraction[s, t] = closer.double().mean().item()
        return move, attraction
