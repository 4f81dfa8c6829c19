"""Tiny ViT, ConvNeXt and ResNet classifiers built from transformers configs (no downloads)."""

import torch
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

NUM_LABELS = 4
NAMES = ["ant", "bee", "cat", "dog"]
IMAGE_SIZE = 8


def _labels(config):
    names = NAMES if config.num_labels == len(NAMES) else [f"class_{i}" for i in range(config.num_labels)]
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    return config


def tiny_vit(num_labels=NUM_LABELS, hidden_size=16):
    return ViTConfig(
        image_size=IMAGE_SIZE, patch_size=2, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_channels=3, num_labels=num_labels,
    )


def tiny_convnext(num_labels=NUM_LABELS):
    # layer_scale 1.0: with the default 1e-6 a random model ignores its residual branches entirely.
    return ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2,
                          layer_scale_init_value=1.0,
                          num_labels=num_labels)


def tiny_resnet(num_labels=NUM_LABELS):
    return ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                        num_labels=num_labels)


BUILDERS = {
    "vit": (tiny_vit, ViTForImageClassification),
    "convnext": (tiny_convnext, ConvNextForImageClassification),
    "resnet": (tiny_resnet, ResNetForImageClassification),
}


def build(kind, seed=0, **kwargs):
    """A tiny classifier in eval mode, with random (seeded) weights and BatchNorm statistics."""
    make_config, cls = BUILDERS[kind]
    torch.manual_seed(seed)
    model = cls(_labels(make_config(**kwargs)))
    for module in model.modules():  # non-trivial BatchNorm statistics, so eval-mode BN matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def image_processor():
    return ViTImageProcessor(do_resize=True, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)


def randomize_filters(peft_model, seed=0, low=-4.0, high=4.0):
    """Give every filter row a distinct random value so that rows really differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "weight_filter_theta" in name:
                param.copy_(torch.empty(param.shape).uniform_(low, high, generator=gen))
    return peft_model


def pixels(batch=5, seed=1):
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
