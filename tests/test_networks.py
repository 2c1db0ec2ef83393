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


def test_conv_velocity_flow_reads_condition_mask_scores_and_time():
    import pytest

    from flowcs.acquisition import Acquisition, RandomFirst, UNetInput
    from flowcs.errors import ConfigError
    from flowcs.experiments.pixel import FlowNetConfig, build_flow_model, flow_net_signature
    from flowcs.flow.policy import FlowPolicy
    from flowcs.operators.pixel import PixelOperator

    op = PixelOperator(1, 12, 12)
    torch.manual_seed(0)
    model = build_flow_model(ReconUNet(2, 1, (4, 8), 8), op, FlowNetConfig(kind="conv", conv_widths=[4, 8], hidden=32,
                                                                           pool=2, time_dim=8))
    assert sum(p.numel() for p in model.encoder.parameters()) == 0  # no pretrained encoder
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    acq = Acquisition.start(op, x, RandomFirst(5), UNetInput(), torch.Generator().manual_seed(2))
    feats = model.features(acq.condition(), acq.acquired)
    x_t, t = torch.randn(3, 144), torch.full((3,), 0.3)
    v = model(x_t, t, feats)
    assert v.shape == (3, 144)
    for changed in (model(x_t + 1.0, t, feats), model(x_t, t + 0.4, feats),
                    model(x_t, t, [feats[0] * 0.0, feats[1]]), model(x_t, t, [feats[0], ~acq.acquired])):
        assert not torch.allclose(changed, v)  # each input moves the velocity
    assert torch.allclose(model(x_t.repeat_interleave(2, 0), t.repeat_interleave(2, 0), feats)[::2], v, atol=1e-6)
    policy = FlowPolicy(model, 144, steps=2, rounds=3, condition_fn=UNetInput(), operator=op)
    mask = policy.propose(acq.condition(), 10, acq.acquired, torch.Generator().manual_seed(0), observe=acq.observe)
    assert ((mask & ~acq.acquired).sum(1) == 10).all() and bool(mask[acq.acquired].all())
    assert flow_net_signature(FlowNetConfig()) == {"flow_widths": [16, 32, 64], "flow_bottleneck": 128}
    assert flow_net_signature(FlowNetConfig(kind="conv"))["flow_net"] == "conv"
    with pytest.raises(ConfigError, match="flow.net.kind 'mlp'"):
        build_flow_model(ReconUNet(2, 1, (4, 8), 8), op, FlowNetConfig(kind="mlp"))
