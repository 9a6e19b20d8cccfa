"""The ResNet of ClipBERT: parameter count, frozen BatchNorm and layers, MSRA stride placement,
res5 dilation, detectron2 key conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videolang.errors import ConfigError
from videolang.models.backbones.resnet import (
    PRESETS,
    FrozenBatchNorm2d,
    ResNet,
    ResNetConfig,
    convert_detectron2_resnet,
    count_weights,
)

TORCHVISION_RESNET50_PARAMS = 25_557_032  # torchvision.models.resnet50(): 25.6M with the fc


def test_resnet50_parameter_count_matches_torchvision():
    trainable_bn = ResNet(ResNetConfig(norm="bn", freeze_at=0, num_classes=1000))
    assert sum(p.numel() for p in trainable_bn.parameters()) == TORCHVISION_RESNET50_PARAMS
    frozen = ResNet(ResNetConfig(num_classes=1000))  # ClipBERT's: frozen BN, stem + res2 frozen
    assert count_weights(frozen) == TORCHVISION_RESNET50_PARAMS
    # without the classifier: the 2048-channel res5 map at stride 32
    assert ResNet(ResNetConfig()).config.out_channels == 2048


def test_frozen_layers_get_no_gradient():
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(blocks=(1, 1, 1, 1), stem_channels=8, width=4, freeze_at=2)).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1."))
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
    assert model.layer2[0].conv1.weight.grad.abs().sum() > 0
    # frozen BatchNorm has no parameters at all, only buffers
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_trainable_bn_in_frozen_stages_stays_in_eval_mode():
    model = ResNet(ResNetConfig(blocks=(1, 1), stem_channels=8, width=4, norm="bn", freeze_at=2)).train()
    assert not model.bn1.training and not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(before, model.layer1[0].bn1.running_mean)


def test_frozen_bn_equals_eval_batchnorm():
    bn = nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x), atol=1e-6, rtol=1e-5)


def test_stride_placement_and_dilation():
    msra = ResNet(ResNetConfig())
    assert msra.layer2[0].conv1.stride == (2, 2) and msra.layer2[0].conv2.stride == (1, 1)
    tv = ResNet(ResNetConfig(stride_in_1x1=False))
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    small = PRESETS["resnet-small"]
    assert ResNet(small)(x).shape[-2:] == (2, 2)  # output stride 32
    dilated = ResNet(ResNetConfig(**{**small.to_dict(), "res5_dilation": 2}))
    assert dilated.layer4[0].conv2.dilation == (2, 2)
    assert dilated(x).shape[-2:] == (4, 4)  # output stride 16
    with pytest.raises(ConfigError, match="res5_dilation"):
        ResNetConfig(res5_dilation=3)


def test_detectron2_keys_convert():
    model = ResNet(PRESETS["resnet-small"])
    inverse = {}
    for key, value in model.state_dict().items():
        k = key.replace("conv1.", "stem.conv1.", 1) if key.startswith("conv1.") else key
        k = k.replace("bn1.", "stem.conv1.norm.", 1) if key.startswith("bn1.") else k
        for i in range(1, 5):
            k = k.replace(f"layer{i}.", f"res{i + 1}.", 1) if k.startswith(f"layer{i}.") else k
        for j in (1, 2, 3):
            k = k.replace(f".bn{j}.", f".conv{j}.norm.")
        k = k.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        inverse["backbone." + k] = value
    inverse["roi_heads.box_head.fc1.weight"] = torch.zeros(1)  # outside the prefix: ignored
    converted = convert_detectron2_resnet(inverse, prefix="backbone.")
    assert set(converted) == set(model.state_dict())
    inverse["backbone.res2.0.conv9.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"backbone\.res2\.0\.conv9\.weight"):
        convert_detectron2_resnet(inverse, prefix="backbone.")
