"""The reference implementation's identification, transcribed, defects included.

For checking and timing :func:`lape_utils.lape.identify` against it; use that for real work.
"""

from __future__ import annotations

import torch


def reference_identify(over_zero, n, top_rate=0.01, filter_rate=0.95, bar_ratio=0.95):
    """Transcription of RUCAIBox Language-Specific-Neurons ``identify.py``, ``activation()``.

    Same operations in the same order: float32 ``over_zero / n``, entropy with NaN -> 0,
    ``kthvalue`` quantiles with Python ``round``, ``topk(largest=False)`` on the entropy with
    +inf for filtered neurons, assignment by ``> bar``, and the ``bincount`` split that drops
    trailing languages with no neurons. Returns ``mask[language][layer]``.
    """
    n_layers, n_neurons, _ = over_zero.shape
    probs = over_zero / n
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_normed = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_normed, dim=-1)
    pooled = probs.flatten()
    tau = pooled.kthvalue(round(len(pooled) * filter_rate)).values.item()
    entropy[(probs > tau).sum(dim=-1) == 0] = torch.inf
    flat_entropy = entropy.flatten()
    _, idx = flat_entropy.topk(round(len(flat_entropy) * top_rate), largest=False)
    rows, cols = idx // n_neurons, idx % n_neurons
    chosen = probs[rows, cols].transpose(0, 1)  # lang x selected
    bar = pooled.kthvalue(round(len(pooled) * bar_ratio)).values.item()
    lang_of, which = torch.where(chosen > bar)
    pairs = torch.stack((rows, cols), dim=-1)
    out = []
    for chunk in which.split(torch.bincount(lang_of).tolist()):
        per_layer: list[list[int]] = [[] for _ in range(n_layers)]
        for layer, neuron in sorted(tuple(r.tolist()) for r in pairs[chunk]):
            per_layer[layer].append(neuron)
        out.append([torch.tensor(x).long() for x in per_layer])
    return out
