"""The README's main job (`make demo`).

Until the training recipe lands this is a smoke demo of the foundation: it encodes a sentence with
the offline MiniLM text encoder and a mask reference with the mask encoder, fuses both into a
feature map with UniFusion, and checks that the block is the identity at initialisation.
"""

from __future__ import annotations

import torch

from unifusion_sam import (
    MaskEncoderConfig,
    MaskReferenceEncoder,
    ReferenceTokens,
    TextEncoderConfig,
    TextReferenceEncoder,
    UniFusion,
    UniFusionConfig,
)


def main() -> None:
    torch.manual_seed(0)
    dim = 64
    text = TextReferenceEncoder(TextEncoderConfig(dim=dim)).eval()
    masks = MaskReferenceEncoder(MaskEncoderConfig(dim=dim, visual_dim=dim, strides=(16,))).eval()
    fusion = UniFusion(UniFusionConfig(dim=dim, num_heads=8, head_dim=8))

    feature = torch.randn(1, dim, 16, 16)  # the current frame's feature map (stride 16 of a 256 x 256 image)
    with torch.no_grad():
        words = text(["the small blue triangle left of the red circle"])
        ref_image = torch.rand(1, 3, 256, 256)
        ref_mask = torch.zeros(1, 256, 256)
        ref_mask[:, 64:128, 32:96] = 1
        ref_visual = torch.randn(1, dim, 16, 16)  # the reference frame's feature map
        (values,) = masks(ref_image, ref_mask, [ref_visual])
        lang = ReferenceTokens(words.words, words.words, words.padding_mask)
        mask = ReferenceTokens.from_maps(ref_visual, values)
        fused = fusion(feature, lang=lang, mask=mask)
    print(f"text tokens {tuple(words.words.shape)}, mask tokens {tuple(mask.keys.shape)}")
    print(f"UniFusion at initialisation: max |F' - F| = {(fused - feature).abs().max().item():.1e} (identity)")


if __name__ == "__main__":
    main()
