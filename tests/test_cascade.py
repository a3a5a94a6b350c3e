"""Cascade attention over shared openings equals plain attention over each row's whole prompt (its
opening's keys and values copied in front of its own), for a batch mixing openings and rows with none."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from scoreflow.backends.cuda import cascade  # noqa: E402


class Layer:
    layer_idx = 1


def _plain(query, key, value, mask, kv, group, scale):
    """Each row attends to [its opening; its own tokens] with the mask extended over the opening."""
    heads, kvh = query.shape[1], key.shape[1]
    rows = []
    for r in range(query.shape[0]):
        opening = kv[int(group[r])]
        k, v, m = key[r:r + 1], value[r:r + 1], mask[r:r + 1]
        if opening is not None:
            ks, vs = opening[Layer.layer_idx]
            k, v = torch.cat([ks, k], 2), torch.cat([vs, v], 2)
            m = torch.cat([torch.ones(*m.shape[:3], ks.shape[2], dtype=torch.bool), m], 3)
        k, v = k.repeat_interleave(heads // kvh, 1), v.repeat_interleave(heads // kvh, 1)
        rows.append(torch.nn.functional.scaled_dot_product_attention(query[r:r + 1], k, v, attn_mask=m, scale=scale))
    return torch.cat(rows).transpose(1, 2)  # (B, q, H, d)


@pytest.mark.parametrize("flash", [True, False])  # the CPU flash-kernel join; the matmul join GPUs use
@pytest.mark.parametrize("q", [1, 5])  # a decoding step; a prefill of each row's rest (causal, left-padded)
@pytest.mark.parametrize("groups", [[0, 0, 0, 0], [1, 0, 2, 1], [0, 1, 0, 1]])
def test_cascade_equals_attention_over_the_whole_prompt(q, groups, flash, monkeypatch):
    monkeypatch.setattr(cascade, "CPU_FLASH", flash)
    g = torch.Generator().manual_seed(len(groups) * 10 + q)
    b, heads, kvh, d, own = len(groups), 6, 2, 8, 7
    layer = lambda n: [(torch.randn(1, kvh, n, d, generator=g), torch.randn(1, kvh, n, d, generator=g))  # noqa: E731
                       for _ in range(2)]
    kv = [layer(11), layer(4), None]  # two openings of different lengths, and rows with none
    query = torch.randn(b, heads, q, d, generator=g)
    key, value = torch.randn(b, kvh, own, d, generator=g), torch.randn(b, kvh, own, d, generator=g)
    mask = torch.ones(b, 1, q, own, dtype=torch.bool).tril(own - q)
    mask[1, :, :, :2] = False  # row 1 is left-padded
    mask[1, 0, :, own - q:] |= torch.eye(q, dtype=torch.bool)  # a padding query sees itself
    group = torch.tensor(groups)
    out, _ = cascade.cascade_attention(Layer, query, key, value, mask, scaling=0.3,
                                       openings=cascade.Openings(kv, group))
    torch.testing.assert_close(out, _plain(query, key, value, mask, kv, group, 0.3), rtol=1e-5, atol=1e-5)
