import torch

from flowcs.flow.model import FrozenEncoder
from flowcs.flow.nets import DualEncoderUNet, SinusoidalTimeEmbedding
from flowcs.tasks.classifier import MLPClassifier
from flowcs.tasks.unet import ReconUNet


def test_recon_unet_shapes_for_odd_sizes_and_features():
    net = ReconUNet(2, 1, (8, 16, 32), 64)
    for hw in [(28, 28), (32, 32), (30, 26)]:
        out = net(torch.rand(2, 2, *hw))
        assert out.shape == (2, 1, *hw)
    feats = net.encode(torch.rand(2, 2, 28, 28))  # padded to 32
    assert [f.shape[1] for f in feats] == net.feature_channels == [8, 16, 32, 64]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]


def test_dual_unet_output_per_location_and_uses_time_and_condition():
    unet = ReconUNet(2, 1, (8, 16, 32), 64)
    enc = FrozenEncoder(unet, "encode")
    v = DualEncoderUNet(28, 28, unet.feature_channels, (8, 16, 16), 32, 16)
    torch.nn.init.normal_(v.out.weight, std=0.1)
    cond = enc(torch.rand(3, 2, 28, 28))
    x = torch.randn(3, 784)
    out = v(x, torch.full((3,), 0.3), cond)
    assert out.shape == (3, 784)
    assert not torch.allclose(out, v(x, torch.full((3,), 0.9), cond))
    # several samples per condition: features repeat
    out6 = v(torch.cat([x, x]).reshape(6, 784), torch.full((6,), 0.3), cond)
    assert out6.shape == (6, 784)


def test_frozen_encoder_stays_frozen():
    unet = ReconUNet(2, 1, (4, 8, 8), 8)
    enc = FrozenEncoder(unet, "encode")
    enc.train()
    assert not unet.training
    assert all(not p.requires_grad for p in unet.parameters())


def test_time_embedding_and_classifier_shapes():
    emb = SinusoidalTimeEmbedding(64)(torch.tensor([0.0, 0.5, 1.0]))
    assert emb.shape == (3, 64)
    assert torch.allclose(emb[0, 32:], torch.ones(32))  # cos(0) = 1
    clf = MLPClassifier()
    assert clf(torch.rand(4, 1, 28, 28)).shape == (4, 10)
    assert sum(p.numel() for p in clf.parameters()) == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 128 + 128 + 1290
