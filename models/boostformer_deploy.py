"""BoostFormer deploy transform: removing the BatchNorm that ends every stage 1-2 block.

That BN sits after the block's residual sum, so no single conv precedes it to fold into. It is
a per-channel affine, and everything downstream of it until the next nonlinearity can absorb
one exactly: the next block (its token mixer is a mean pooling, which commutes with a
per-channel affine; its Mix-CFN branch sees the affine through its input norm), and at the
stage end both consumers of the stage output (the next patch embedding's mean pool + 1x1 conv,
and the head's projection of that stage). `BoostFormer.reparameterize` calls
`propagate_block_norms`; the generic walker then folds the remaining norms block by block.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeseg.models.boostformer_layouts import POOL_STAGES
from edgeseg.models.layers.norm_fold import bn_after_affine, fold_affine_into_following
from edgeseg.reparam.fusion import bn_scale_shift, conv_like

# A carried block-end BN is undone by dividing each Mix-CFN output by its scale; smaller
# scales (a zero gamma, a pruned channel) would blow that up, so the BN is kept there.
MIN_CARRIED_SCALE = 1e-6


def _is_mean_pool(pool: nn.Module) -> bool:
    """Window weights sum to 1 everywhere (padding excluded), so pool(a*x + b) = a*pool(x) + b."""
    return (isinstance(pool, nn.AvgPool2d) and not pool.count_include_pad and not pool.ceil_mode
            and pool.divisor_override is None)


def _carried_scale_ok(scale: torch.Tensor) -> bool:
    if scale.is_meta:  # structure only: refusals depend on weights, forced ones come from the cfg
        return True
    return bool((scale.abs() >= MIN_CARRIED_SCALE).all())  # False for NaN too


@torch.no_grad()
def _absorb_into_block(blk: nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
    """`blk` is a stage 1-2 `PoolFormerLayer` of boostformer.py.

    Make `blk` run on u where its real input is a*u + b (per channel); its output is then
    a*u' + b for the real output before norm_2. The token mixer needs nothing (mean pooling
    commutes with the affine, and x + ls1*(pool(x) - x) then does too); the Mix-CFN branch
    sees the affine through its input norm and is scaled by 1/a where it joins the stream."""
    mlp = blk.mlp
    if blk.norm_1 is not None:
        blk.norm_1 = bn_after_affine(blk.norm_1, a, b)
    else:
        mlp._modules[mlp.names[0]] = fold_affine_into_following(mlp.conv_in, a, b)
    out = mlp.conv_out
    inv = 1.0 / a
    mlp._modules[mlp.names[1]] = conv_like(out, out.weight * inv.reshape(-1, 1, 1, 1), out.bias * inv)


@torch.no_grad()
def propagate_block_norms(model: nn.Module, keep: Sequence[str] = ()) -> list[str]:
    """Remove the BN ending each stage 1-2 block by carrying it forward as a per-channel affine.

    Exact: the next block absorbs it (`_absorb_into_block`) and its own BN composes with it; at
    the stage end, both consumers of the stage output (the next patch embedding's mean pool and
    1x1 conv, and the head's projection of that stage) fold it into their input side. A BN stays
    (composed with what it carries) where the carried scale would have to be divided by and is
    tiny, or where `keep` names it ("stage.block"). Returns the kept BNs' names.
    """
    enc, head = model.segformer.encoder, model.decode_head
    kept: list[str] = []
    for i in range(POOL_STAGES):
        blocks = enc.block[i]
        embed = enc.patch_embeddings[i + 1]
        if not (_is_mean_pool(embed.pool) and all(_is_mean_pool(blk.pooling.pool) for blk in blocks)):
            kept += [f"{i}.{j}" for j in range(len(blocks))]
            continue
        pending: tuple[torch.Tensor, torch.Tensor] | None = None
        for j, blk in enumerate(blocks):
            if pending is not None:
                _absorb_into_block(blk, *pending)
            s, t = bn_scale_shift(blk.norm_2)
            if pending is not None:
                a, b = pending
                s, t = s * a, s * b + t
            last = j == len(blocks) - 1  # the stage's consumers only multiply by the scale
            if f"{i}.{j}" in keep or not (last or _carried_scale_ok(s)):
                if pending is not None:
                    blk.norm_2 = bn_after_affine(blk.norm_2, *pending)
                kept.append(f"{i}.{j}")
                pending = None
            else:
                blk.norm_2 = None
                pending = (s, t)
        if pending is not None:
            embed.conv = fold_affine_into_following(embed.conv, *pending)
            head.linear_c[i].proj = fold_affine_into_following(head.linear_c[i].proj, *pending)
    return kept
